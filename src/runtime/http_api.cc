#include "runtime/http_api.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <random>

#include "runtime/metrics_exporter.h"
#include "runtime/status_page.h"
#include "runtime/version.h"
#include "text/stream_decoder.h"
#include "text/utf8.h"

namespace engram {
namespace {

using Json = nlohmann::ordered_json;
constexpr auto kPollInterval = std::chrono::milliseconds(20);

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

HttpResponse JsonResponse(int status, const Json& body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/json";
  r.body = Dump(body);
  return r;
}

HttpResponse ErrorResponse(const ApiError& e) {
  HttpResponse r;
  r.status = e.http_status;
  r.content_type = "application/json";
  r.body = ErrorBody(e);
  if (e.http_status == 503) r.headers.emplace_back("Retry-After", "1");
  if (e.http_status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

ApiError Unavailable503(std::string message) {
  ApiError e;
  e.http_status = 503;
  e.type = "server_error";
  e.code = "unavailable";
  e.message = std::move(message);
  return e;
}

const char* FinishName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "abort";
    default:
      return "stop";
  }
}

uint64_t SplitMix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Code points in UTF-8 text (Python's len(), which OpenAI's text_offset counts).
int64_t CodePoints(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

ApiError ToApiError(const Status& st) {
  ApiError e;
  e.message = std::string(st.message());
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kFailedPrecondition:
      e.http_status = 400;
      break;
    case StatusCode::kNotFound:
      e.http_status = 404;
      break;
    case StatusCode::kResourceExhausted:
      e = Unavailable503(e.message);
      e.code = "overloaded";
      break;
    case StatusCode::kUnavailable:
      e = Unavailable503(e.message);
      break;
    case StatusCode::kDeadlineExceeded:
      e.http_status = 504;
      e.type = "server_error";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

struct HttpApi::Served {
  EngineLoop* loop = nullptr;
  std::shared_ptr<const Tokenizer> tokenizer;
  ChatRenderer render_chat;
  int64_t max_model_len = 0;
  int64_t created = 0;
};

// The requests of one API call (prompts x n choices) and what has come back of each.
class HttpApi::Generation {
 public:
  struct Choice {
    int index = 0;
    int prompt = 0;
    std::shared_ptr<RequestState> state;
    std::string echo;                // prompt text to put first (completions with echo)
    std::string text;                // everything produced so far (whole responses)
    Json logprobs;                   // accumulated logprobs (whole responses)
    std::vector<int32_t> token_ids;  // accumulated token ids (whole responses)
    int64_t text_chars = 0;          // code points of text before the next token (text_offset)
    bool started = false;            // streaming: the first chunk (role / echo) was sent
    bool finished = false;
    FinishReason finish = FinishReason::kNone;
    Status status;
    int completion_tokens = 0;
  };

  Generation(const Served& s, const OpenAiRequest& req, std::string id)
      : served(s),
        chat(req.chat),
        logprobs(req.logprobs),
        skip_special(req.skip_special_tokens),
        token_ids(req.return_token_ids),
        id(std::move(id)),
        created(static_cast<int64_t>(std::time(nullptr))) {}
  // Whoever holds the generation last (the handler or the stream) cancels what still runs:
  // a client gone mid-request frees its sequences at the loop's next iteration.
  ~Generation() {
    for (Choice& c : choices) {
      if (!c.finished && c.state) c.state->RequestCancel();
    }
  }

  bool all_finished() const {
    for (const Choice& c : choices) {
      if (!c.finished) return false;
    }
    return true;
  }
  const Status* first_error() const {
    for (const Choice& c : choices) {
      if (c.finished && !c.status.ok()) return &c.status;
    }
    return nullptr;
  }

  // Token text alone (its bytes, and as valid UTF-8).
  std::string TokenBytes(int32_t id) const {
    if (!served.tokenizer) return {};
    const int32_t one[1] = {id};
    return served.tokenizer->Decode(one, /*skip_special_tokens=*/false);
  }

  // The logprobs of one event in the API's shape (completions or chat).
  Json Logprobs(Choice& c, const StreamEvent& ev) const {
    const size_t top_n = static_cast<size_t>(std::max(0, logprobs));
    if (chat) {
      Json content = Json::array();
      for (const TokenLogprobs& lp : ev.logprobs) {
        auto entry = [&](int32_t tok, float v) {
          const std::string raw = TokenBytes(tok);
          Json bytes = Json::array();
          for (unsigned char b : raw) bytes.push_back(static_cast<int>(b));
          return Json{{"token", utf8::Lossy(raw)}, {"logprob", v}, {"bytes", std::move(bytes)}};
        };
        Json e = entry(lp.token, lp.logprob);
        Json top = Json::array();
        for (size_t i = 0; i < lp.top.size() && i < top_n; ++i) {
          top.push_back(entry(lp.top[i].first, lp.top[i].second));
        }
        e["top_logprobs"] = std::move(top);
        content.push_back(std::move(e));
      }
      return Json{{"content", std::move(content)}};
    }
    Json tokens = Json::array(), token_lps = Json::array(), tops = Json::array(),
         offsets = Json::array();
    for (const TokenLogprobs& lp : ev.logprobs) {
      const std::string s = utf8::Lossy(TokenBytes(lp.token));
      tokens.push_back(s);
      token_lps.push_back(lp.logprob);
      Json top = Json::object();
      for (size_t i = 0; i < lp.top.size() && i < top_n; ++i) {
        top[utf8::Lossy(TokenBytes(lp.top[i].first))] = lp.top[i].second;
      }
      tops.push_back(std::move(top));
      offsets.push_back(c.text_chars);
      c.text_chars += CodePoints(s);
    }
    return Json{{"tokens", std::move(tokens)},
                {"token_logprobs", std::move(token_lps)},
                {"top_logprobs", std::move(tops)},
                {"text_offset", std::move(offsets)}};
  }

  Json Usage() const {
    int64_t completion = 0;
    for (const Choice& c : choices) completion += c.completion_tokens;
    return Json{{"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion},
                {"total_tokens", prompt_tokens + completion}};
  }

  // Reads every queued event of every choice into `on_event`; waits up to kPollInterval
  // when there was none. Returns whether any event was read.
  template <typename F>
  bool Poll(F&& on_event) {
    const uint64_t seen = signal->seen();
    bool any = false;
    for (Choice& c : choices) {
      StreamEvent ev;
      while (!c.finished && c.state->TryPop(&ev)) {
        any = true;
        c.completion_tokens += static_cast<int>(ev.token_ids.size());
        if (ev.finish != FinishReason::kNone) {
          c.finished = true;
          c.finish = ev.finish;
          c.status = ev.status;
          c.completion_tokens = ev.completion_tokens;
        }
        on_event(c, ev);
      }
    }
    if (!any) signal->Wait(seen, kPollInterval);
    return any;
  }

  Json ChunkHead() const {
    return Json{{"id", id},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model}};
  }

  const Served& served;
  const bool chat;
  const int logprobs;
  const bool skip_special;
  const bool token_ids;  // return_token_ids
  const std::string id;
  const int64_t created;
  std::string model;
  int64_t prompt_tokens = 0;
  std::shared_ptr<EventSignal> signal = std::make_shared<EventSignal>();
  std::vector<Choice> choices;
};

// The server-sent events of a streamed response: chunks as the choices produce them, the
// usage chunk when asked, then "data: [DONE]".
class HttpApi::EventStream final : public HttpStream {
 public:
  EventStream(std::unique_ptr<Generation> gen, std::shared_ptr<const Served> served,
              std::function<bool()> client_gone, bool include_usage)
      : served_(std::move(served)),
        gen_(std::move(gen)),
        client_gone_(std::move(client_gone)),
        include_usage_(include_usage) {}

  bool Next(std::string* out) override {
    if (done_) return false;
    for (Generation::Choice& c : gen_->choices) {
      if (c.started) continue;
      c.started = true;
      if (gen_->chat) {
        Json delta = {{"role", "assistant"}, {"content", ""}};
        Emit(out, Choice(c, std::move(delta), nullptr, nullptr));
      } else if (!c.echo.empty()) {
        Emit(out, Choice(c, c.echo, nullptr, nullptr));
        c.text_chars += CodePoints(c.echo);
      }
    }
    if (!out->empty()) return true;
    while (true) {
      if (client_gone_()) {
        spdlog::debug("http: {}: the client went away; cancelling", gen_->id);
        done_ = true;
        return false;  // ~Generation cancels what still runs
      }
      const Status* error = nullptr;
      gen_->Poll([&](Generation::Choice& c, StreamEvent& ev) {
        if (!ev.status.ok()) {
          error = &c.status;
          return;
        }
        Json lp = gen_->logprobs >= 0 && !ev.logprobs.empty() ? gen_->Logprobs(c, ev) : Json();
        Json finish = ev.finish != FinishReason::kNone ? Json(FinishName(ev.finish)) : Json();
        if (ev.text.empty() && lp.is_null() && finish.is_null() &&
            (!gen_->token_ids || ev.token_ids.empty())) {
          return;
        }
        Json choice;
        if (gen_->chat) {
          Json delta = Json::object();
          if (!ev.text.empty()) delta["content"] = ev.text;
          choice = Choice(c, std::move(delta), std::move(lp), std::move(finish));
        } else {
          choice = Choice(c, ev.text, std::move(lp), std::move(finish));
        }
        if (gen_->token_ids) choice["token_ids"] = ev.token_ids;
        Emit(out, std::move(choice));
      });
      if (error != nullptr) {
        ApiError e = ToApiError(*error);
        *out += "data: " + Dump(Json::parse(ErrorBody(e))) + "\n\n";
        *out += "data: [DONE]\n\n";
        done_ = true;
        return false;
      }
      if (gen_->all_finished()) {
        if (include_usage_) {
          Json u = gen_->ChunkHead();
          u["choices"] = Json::array();
          u["usage"] = gen_->Usage();
          *out += "data: " + Dump(u) + "\n\n";
        }
        *out += "data: [DONE]\n\n";
        done_ = true;
        return false;
      }
      if (!out->empty()) return true;
    }
  }

 private:
  Json Choice(const Generation::Choice& c, Json content, Json logprobs, Json finish) const {
    Json ch = {{"index", c.index}};
    ch[gen_->chat ? "delta" : "text"] = std::move(content);
    ch["logprobs"] = std::move(logprobs);
    ch["finish_reason"] = std::move(finish);
    return ch;
  }
  void Emit(std::string* out, Json choice) const {
    Json chunk = gen_->ChunkHead();
    chunk["choices"] = Json::array({std::move(choice)});
    if (include_usage_) chunk["usage"] = nullptr;
    *out += "data: " + Dump(chunk) + "\n\n";
  }

  std::shared_ptr<const Served> served_;  // keeps what gen_ refers to alive
  std::unique_ptr<Generation> gen_;
  std::function<bool()> client_gone_;
  const bool include_usage_;
  bool done_ = false;
};

HttpApi::HttpApi(HttpApiOptions options) : options_(std::move(options)) {
  std::random_device rd;
  id_salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

HttpApi::~HttpApi() = default;

void HttpApi::SetLoop(EngineLoop* loop, std::shared_ptr<const Tokenizer> tokenizer,
                      ChatRenderer render_chat) {
  auto s = std::make_shared<Served>();
  s->loop = loop;
  s->tokenizer = std::move(tokenizer);
  s->render_chat = std::move(render_chat);
  s->max_model_len = loop->config().max_position_embeddings;
  s->created = static_cast<int64_t>(std::time(nullptr));
  std::atomic_store(&served_, std::shared_ptr<const Served>(std::move(s)));
}

std::string HttpApi::NextId(const char* prefix) {
  const uint64_t n = next_id_.fetch_add(1);
  return fmt::format("{}-{:016x}{:016x}", prefix, SplitMix(id_salt_ ^ n), SplitMix(n + id_salt_));
}

HttpResponse HttpApi::Handle(const HttpRequest& request) {
  const std::string& path = request.path;
  const bool get = request.method == "GET" || request.method == "HEAD";
  const bool post = request.method == "POST";
  auto method_not_allowed = [](const char* allow) {
    ApiError e;
    e.http_status = 405;
    e.message = fmt::format("method not allowed (allowed: {})", allow);
    HttpResponse r = ErrorResponse(e);
    r.headers.emplace_back("Allow", allow);
    return r;
  };
  const std::shared_ptr<const Served> served = std::atomic_load(&served_);

  if (path == "/health") {
    if (!get) return method_not_allowed("GET, HEAD");
    HttpResponse r;
    if (served == nullptr) {
      r.status = 503;
      r.body = "loading\n";
    } else if (draining_.load(std::memory_order_relaxed)) {
      r.status = 503;
      r.body = "draining\n";
    } else if (Status st = served->loop->ModelHealth(); !st.ok()) {
      r.status = 503;
      r.body = std::string(st.message()) + "\n";
    } else {
      r.body = "";
    }
    return r;
  }
  // Everything else needs the key (and, with a client CA, the client's certificate). The status
  // page shows what /metrics shows (model, load, row traffic), so it follows /metrics' rule.
  const bool operator_route = path == "/metrics" || path == "/" || path == "/status.json";
  const bool exempt = operator_route && !options_.metrics_require_auth;
  if (!exempt) {
    const std::string* auth = request.Header("authorization");
    const bool cert_ok = !options_.require_client_cert || request.client_verified;
    const bool key_ok = !options_.authorize || (auth != nullptr && options_.authorize(*auth));
    if (!cert_ok || !key_ok) {
      spdlog::info("http: {} {} from {}: unauthenticated ({})", request.method, path, request.peer,
                   cert_ok ? "missing or invalid API key" : "no client certificate");
      ApiError e;
      e.http_status = 401;
      e.message = "missing or invalid API key";
      e.code = "invalid_api_key";
      return ErrorResponse(e);
    }
  }
  if (path == "/metrics") {
    if (!get) return method_not_allowed("GET, HEAD");
    if (!options_.metrics && served == nullptr) {
      return ErrorResponse(Unavailable503("the model is still loading"));
    }
    HttpResponse r;
    r.content_type = options_.metrics_content_type;
    r.body = options_.metrics ? options_.metrics() : MetricsExporter::Render(*served->loop);
    return r;
  }
  if (path == "/" || path == "/status.json") {
    if (!get) return method_not_allowed("GET, HEAD");
    HttpResponse r;
    r.headers.emplace_back("Cache-Control", "no-store");
    if (path == "/") {
      r.content_type = "text/html; charset=utf-8";
      r.body = std::string(StatusPageHtml());
      return r;
    }
    if (served == nullptr) return ErrorResponse(Unavailable503("the model is still loading"));
    r.content_type = "application/json";
    r.body = Dump(StatusSnapshot(*served->loop));
    return r;
  }
  if (path == "/version") {
    if (!get) return method_not_allowed("GET, HEAD");
    return JsonResponse(200, Json{{"version", Version()}});
  }
  const bool model_route = path == "/v1/completions" || path == "/v1/chat/completions" ||
                           path == "/v1/models" || path == "/tokenize" || path == "/detokenize";
  if (!model_route) {
    ApiError e;
    e.http_status = 404;
    e.message = fmt::format("no route {} {}", request.method, path);
    return ErrorResponse(e);
  }
  if (path == "/v1/models") {
    if (!get) return method_not_allowed("GET, HEAD");
  } else if (!post) {
    return method_not_allowed("POST");
  }
  if (served == nullptr) return ErrorResponse(Unavailable503("the model is still loading"));
  if (path == "/v1/models") return Models(*served);
  if (path == "/tokenize") return Tokenize(request, *served);
  if (path == "/detokenize") return Detokenize(request, *served);
  return Completions(request, path == "/v1/chat/completions", served);
}

HttpResponse HttpApi::Models(const Served& s) const {
  Json model = {
      {"id", options_.model_name},       {"object", "model"},           {"created", s.created},
      {"owned_by", "engramd"},           {"root", options_.model_name}, {"parent", nullptr},
      {"max_model_len", s.max_model_len}};
  return JsonResponse(200, Json{{"object", "list"}, {"data", Json::array({std::move(model)})}});
}

namespace {

// The chat prompt: messages through the model's chat template, encoded without adding special
// tokens (the template writes bos_token itself).
std::optional<ApiError> EncodeChat(const ChatRenderer& render, const Tokenizer* tokenizer,
                                   const OpenAiRequest& req, std::vector<int32_t>* ids) {
  if (tokenizer == nullptr) {
    return BadField("messages", "the model has no tokenizer: send /v1/completions token ids");
  }
  if (!render) {
    return BadField("messages",
                    "the model has no chat template (tokenizer_config.json has no "
                    "chat_template; set chat_template: in model.yaml)");
  }
  auto text = render(req.messages, req.add_generation_prompt, req.tools, req.chat_template_kwargs);
  if (!text.ok()) {
    return BadField("messages",
                    fmt::format("the chat template failed: {}", text.status().message()));
  }
  auto enc = tokenizer->Encode(*text, /*add_special_tokens=*/false);
  if (!enc.ok()) return BadField("messages", std::string(enc.status().message()));
  *ids = std::move(enc).value();
  return std::nullopt;
}

std::optional<ApiError> CheckModel(const std::string& asked, const std::string& served) {
  if (asked.empty() || asked == served) return std::nullopt;
  ApiError e;
  e.http_status = 404;
  e.message =
      fmt::format("The model `{}` does not exist (this server serves `{}`).", asked, served);
  e.param = "model";
  e.code = "model_not_found";
  return e;
}

}  // namespace

HttpResponse HttpApi::Completions(const HttpRequest& request, bool chat,
                                  const std::shared_ptr<const Served>& served) {
  const Served& s = *served;
  Json body;
  OpenAiRequest req;
  std::optional<ApiError> err = ParseJsonBody(request.body, &body);
  if (!err) err = ParseOpenAiRequest(body, chat, options_.limits, &req);
  if (!err) err = CheckModel(req.model, options_.model_name);
  std::vector<std::vector<int32_t>> prompt_ids;
  if (!err) {
    if (chat) {
      prompt_ids.emplace_back();
      err = EncodeChat(s.render_chat, s.tokenizer.get(), req, &prompt_ids.back());
    } else {
      for (size_t i = 0; i < req.prompts.size() && !err; ++i) {
        PromptInput& p = req.prompts[i];
        if (p.text) {
          if (!s.tokenizer) {
            err = BadField("prompt", "the model has no tokenizer: send token ids as the prompt");
            break;
          }
          auto ids = s.tokenizer->Encode(*p.text, options_.add_special_tokens);
          if (!ids.ok()) {
            err = BadField("prompt", std::string(ids.status().message()));
            break;
          }
          p.ids = std::move(ids).value();
        }
        prompt_ids.push_back(p.ids);
      }
    }
  }
  if (err) {
    s.loop->CountRejected();
    return ErrorResponse(*err);
  }

  auto gen = std::make_unique<Generation>(s, req, NextId(chat ? "chatcmpl" : "cmpl"));
  gen->model = options_.model_name;
  const uint64_t base_seed =
      req.seed ? *req.seed : SplitMix(id_salt_ + next_id_.fetch_add(1) * 0x9E37ull);
  for (size_t p = 0; p < prompt_ids.size(); ++p) {
    gen->prompt_tokens += static_cast<int64_t>(prompt_ids[p].size());
    std::string echo;
    if (req.echo) {
      echo = req.prompts[p].text ? *req.prompts[p].text
             : s.tokenizer
                 ? utf8::Lossy(s.tokenizer->Decode(prompt_ids[p], req.skip_special_tokens))
                 : std::string();
    }
    for (int i = 0; i < req.n; ++i) {
      GenerationParams params;
      params.prompt = prompt_ids[p];
      params.max_tokens = req.max_tokens;
      params.sampling = req.sampling;
      params.sampling.seed = base_seed + static_cast<uint64_t>(i);
      params.sampling.logprobs = req.logprobs >= 0 ? std::max(1, req.logprobs) : 0;
      params.logprobs = params.sampling.logprobs;
      params.stop = req.stop;
      params.stop_token_ids = req.stop_token_ids;
      params.ignore_eos = req.ignore_eos;
      params.skip_special_tokens = req.skip_special_tokens;
      const int index = static_cast<int>(p) * req.n + i;
      auto state =
          s.loop->Submit(fmt::format("{}-{}", gen->id, index), std::move(params), std::nullopt);
      if (!state.ok()) return ErrorResponse(ToApiError(state.status()));  // ~gen cancels
      (*state)->SetSignal(gen->signal);
      Generation::Choice c;
      c.index = index;
      c.prompt = static_cast<int>(p);
      c.state = std::move(state).value();
      c.echo = echo;
      gen->choices.push_back(std::move(c));
    }
  }

  if (req.stream) {
    HttpResponse r;
    r.content_type = "text/event-stream";
    r.headers.emplace_back("Cache-Control", "no-cache");
    r.stream = std::make_unique<EventStream>(std::move(gen), served, request.client_gone,
                                             req.include_usage);
    return r;
  }

  for (Generation::Choice& c : gen->choices) {
    c.text = c.echo;
    c.text_chars = CodePoints(c.echo);
  }
  while (!gen->all_finished()) {
    if (request.client_gone()) {
      spdlog::debug("http: {}: the client went away; cancelling", gen->id);
      ApiError e;
      e.http_status = 499;
      e.message = "client closed the request";
      return ErrorResponse(e);  // nobody reads it; ~gen cancels the requests
    }
    gen->Poll([&](Generation::Choice& c, StreamEvent& ev) {
      c.text += ev.text;
      if (gen->token_ids)
        c.token_ids.insert(c.token_ids.end(), ev.token_ids.begin(), ev.token_ids.end());
      if (gen->logprobs < 0 || ev.logprobs.empty()) return;
      Json lp = gen->Logprobs(c, ev);
      if (c.logprobs.is_null()) {
        c.logprobs = std::move(lp);
      } else {
        for (auto& [k, v] : lp.items()) {
          for (auto& x : v) c.logprobs[k].push_back(std::move(x));
        }
      }
    });
  }
  if (const Status* e = gen->first_error()) return ErrorResponse(ToApiError(*e));
  Json choices = Json::array();
  for (Generation::Choice& c : gen->choices) {
    Json ch = {{"index", c.index}};
    if (chat) {
      ch["message"] = Json{{"role", "assistant"}, {"content", c.text}};
    } else {
      ch["text"] = c.text;
    }
    ch["logprobs"] = gen->logprobs >= 0 && c.logprobs.is_null()
                         ? (chat ? Json{{"content", Json::array()}}
                                 : Json{{"tokens", Json::array()},
                                        {"token_logprobs", Json::array()},
                                        {"top_logprobs", Json::array()},
                                        {"text_offset", Json::array()}})
                         : c.logprobs;
    ch["finish_reason"] = FinishName(c.finish);
    if (gen->token_ids) ch["token_ids"] = c.token_ids;
    choices.push_back(std::move(ch));
  }
  Json out = {{"id", gen->id},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", gen->created},
              {"model", gen->model},
              {"choices", std::move(choices)},
              {"usage", gen->Usage()}};
  return JsonResponse(200, out);
}

HttpResponse HttpApi::Tokenize(const HttpRequest& request, const Served& s) {
  Json body;
  if (auto e = ParseJsonBody(request.body, &body)) return ErrorResponse(*e);
  if (!s.tokenizer) return ErrorResponse(BadField("", "the model has no tokenizer"));
  std::string model;
  if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return ErrorResponse(BadField("model", "model must be a string"));
    if (auto e = CheckModel(it->get<std::string>(), options_.model_name)) return ErrorResponse(*e);
  }
  bool return_strs = false;
  if (auto it = body.find("return_token_strs"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return ErrorResponse(BadField("return_token_strs", "return_token_strs must be a boolean"));
    }
    return_strs = it->get<bool>();
  }
  std::vector<int32_t> ids;
  const bool messages = body.contains("messages");
  bool add_special = !messages;
  if (auto it = body.find("add_special_tokens"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) {
      return ErrorResponse(BadField("add_special_tokens", "add_special_tokens must be a boolean"));
    }
    add_special = it->get<bool>();
  }
  if (messages) {
    OpenAiRequest req;
    if (auto e = ParseOpenAiRequest(body, /*chat=*/true, options_.limits, &req)) {
      return ErrorResponse(*e);
    }
    if (auto e = EncodeChat(s.render_chat, s.tokenizer.get(), req, &ids)) {
      return ErrorResponse(*e);
    }
    if (add_special && s.tokenizer->bos_id() >= 0 &&
        (ids.empty() || ids[0] != s.tokenizer->bos_id())) {
      ids.insert(ids.begin(), s.tokenizer->bos_id());
    }
  } else {
    auto it = body.find("prompt");
    if (it == body.end() || !it->is_string()) {
      return ErrorResponse(BadField("prompt", "prompt is required: a string (or send messages)"));
    }
    if (!utf8::IsValid(it->get_ref<const std::string&>())) {
      return ErrorResponse(BadField("prompt", "prompt is not valid UTF-8"));
    }
    auto enc = s.tokenizer->Encode(it->get<std::string>(), add_special);
    if (!enc.ok()) return ErrorResponse(BadField("prompt", std::string(enc.status().message())));
    ids = std::move(enc).value();
  }
  Json out = {{"count", ids.size()}, {"max_model_len", s.max_model_len}, {"tokens", ids}};
  if (return_strs) {
    Json strs = Json::array();
    for (int32_t id : ids) {
      auto tok = s.tokenizer->IdToToken(id);
      strs.push_back(tok ? utf8::Lossy(*tok) : std::string());
    }
    out["token_strs"] = std::move(strs);
  } else {
    out["token_strs"] = nullptr;
  }
  return JsonResponse(200, out);
}

HttpResponse HttpApi::Detokenize(const HttpRequest& request, const Served& s) {
  Json body;
  if (auto e = ParseJsonBody(request.body, &body)) return ErrorResponse(*e);
  if (!s.tokenizer) return ErrorResponse(BadField("", "the model has no tokenizer"));
  if (auto it = body.find("model"); it != body.end() && it->is_string()) {
    if (auto e = CheckModel(it->get<std::string>(), options_.model_name)) return ErrorResponse(*e);
  }
  auto it = body.find("tokens");
  if (it == body.end() || !it->is_array()) {
    return ErrorResponse(BadField("tokens", "tokens is required: an array of token ids"));
  }
  std::vector<int32_t> ids;
  const int64_t vocab = s.tokenizer->vocab_size();
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& t = (*it)[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= vocab) {
      return ErrorResponse(BadField(fmt::format("tokens[{}]", i),
                                    fmt::format("tokens[{}] is not a token id of this tokenizer "
                                                "(expected an integer in [0, {}))",
                                                i, vocab)));
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  StreamDecoder dec(*s.tokenizer, /*skip_special_tokens=*/false);
  std::string text;
  for (int32_t t : ids) text += dec.Push(t);
  text += dec.Finish();
  return JsonResponse(200, Json{{"prompt", text}});
}

}  // namespace engram
