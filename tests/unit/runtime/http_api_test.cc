// HttpApi over a real HttpServer on loopback and a real EngineLoop (synth:tiny with
// DeepSeek-V3's tokenizer): completions whole and streamed (equal under greedy decoding),
// usage exact, n > 1 and several prompts, stop strings, logprobs, echo, the error bodies
// (400 naming the field, 401, 404, 405, 413, 503 with Retry-After), a client that vanishes
// mid-stream cancels its request at once (its KV blocks come back), /health through loading
// and drain, /tokenize, /detokenize, /v1/models, /version, /metrics.
#include "runtime/http_api.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "../../support/loopback_http.h"
#include "../../support/tokenizer_fixture.h"
#include "model/model_files.h"
#include "runtime/engine.h"
#include "text/utf8.h"

namespace engram {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;
using testing::Dial;
using testing::Exchange;
using testing::StatusOf;

struct Reply {
  int status = 0;
  std::string head, body;
  Json json() const { return Json::parse(body, nullptr, false); }
};

Reply Send(int port, const std::string& method, const std::string& path, const std::string& body,
           const std::string& extra_headers = "") {
  const std::string raw =
      Exchange(port,
               method + " " + path + " HTTP/1.0\r\nContent-Length: " + std::to_string(body.size()) +
                   "\r\n" + extra_headers + "\r\n" + body,
               60);
  Reply r;
  r.status = StatusOf(raw);
  const size_t end = raw.find("\r\n\r\n");
  r.head = raw.substr(0, end);
  if (end != std::string::npos) r.body = raw.substr(end + 4);
  return r;
}
Reply Post(int port, const std::string& path, const Json& body, const std::string& extra = "") {
  return Send(port, "POST", path, body.dump(), extra);
}

// The JSON payloads of a server-sent event stream, up to (not including) [DONE]; done is set
// when [DONE] came last.
std::vector<Json> Events(const std::string& body, bool* done) {
  std::vector<Json> out;
  *done = false;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    ev = ev.substr(6);
    if (ev == "[DONE]") {
      *done = pos == body.size();
      break;
    }
    out.push_back(Json::parse(ev));
  }
  return out;
}

class HttpApiTest : public ::testing::Test {
 protected:
  static constexpr const char* kModel = "tiny-test";

  void SetUp() override { Boot({}); }

  void Boot(HttpApiOptions options, int max_running = 8, int max_waiting = 64) {
    server_.reset();
    api_.reset();
    loop_.reset();
    if (!testing::DeepSeekTokenizerPresent()) GTEST_SKIP();
    auto files = OpenModel("synth:tiny?tokenizer=" + testing::DeepSeekTokenizerPath());
    ASSERT_TRUE(files.ok()) << files.status().ToString();
    auto tok = Tokenizer::Load(files->tokenizer_path);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tokenizer_ = std::make_shared<Tokenizer>(std::move(tok).value());
    EngineOptions eo;
    eo.max_seqs = max_running;
    eo.kv_tokens = 16384;
    eo.backend.threads = 2;
    auto engine = Engine::Create(std::move(files).value(), eo);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    ServingOptions so;
    so.limits.max_running_seqs = max_running;
    so.limits.max_waiting = max_waiting;
    so.limits.kv_blocks = 16384 / 16;
    so.max_tokens_default = 16;
    loop_ = std::make_unique<EngineLoop>(std::move(engine).value(), tokenizer_, so);
    options.model_name = kModel;
    api_ = std::make_unique<HttpApi>(options);
    HttpServerOptions ho;
    ho.thread_per_connection = true;
    ho.max_body_bytes = 64 << 10;
    ho.error_response = [](int status, const std::string& reason) {
      ApiError e;
      e.http_status = status;
      e.message = reason;
      HttpResponse r;
      r.status = status;
      r.content_type = "application/json";
      r.body = ErrorBody(e);
      return r;
    };
    auto s = HttpServer::Start(
        "127.0.0.1:0", [this](const HttpRequest& r) { return api_->Handle(r); }, ho);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
    port_ = server_->port();
  }
  void Publish(ChatRenderer render = nullptr) {
    api_->SetLoop(loop_.get(), tokenizer_, std::move(render));
  }

  void TearDown() override {
    server_.reset();  // connections first: their streams hold requests of the loop
    api_.reset();
    loop_.reset();
  }

  // Waits until nothing runs or waits in the loop and every KV block is free again.
  bool Drained(std::chrono::milliseconds within = 5000ms) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < within) {
      const ServingStats s = loop_->Stats();
      if (loop_->InFlight() == 0 && s.kv_blocks_free == s.kv_blocks_total) return true;
      std::this_thread::sleep_for(2ms);
    }
    return false;
  }

  std::shared_ptr<const Tokenizer> tokenizer_;
  std::unique_ptr<EngineLoop> loop_;
  std::unique_ptr<HttpApi> api_;
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

TEST_F(HttpApiTest, HealthFollowsLoadingAndDrain) {
  EXPECT_EQ(Send(port_, "GET", "/health", "").status, 503);  // not loaded yet
  EXPECT_EQ(Post(port_, "/v1/completions", {{"prompt", "x"}}).status, 503);
  Publish();
  EXPECT_EQ(Send(port_, "GET", "/health", "").status, 200);
  EXPECT_EQ(Send(port_, "POST", "/health", "").status, 405);
  api_->BeginDrain();
  EXPECT_EQ(Send(port_, "GET", "/health", "").status, 503);
}

// GET / is the status page at once; /status.json is 503 until the model is published, then the
// snapshot (the resident tier: every Engram layer listed, no row traffic counted).
TEST_F(HttpApiTest, StatusPageAndStatusJson) {
  const Reply page = Send(port_, "GET", "/", "");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.head.find("text/html; charset=utf-8"), std::string::npos) << page.head;
  EXPECT_NE(page.body.find("status.json"), std::string::npos);
  EXPECT_EQ(Send(port_, "GET", "/status.json", "").status, 503);
  Publish();
  const Reply r = Send(port_, "GET", "/status.json", "");
  ASSERT_EQ(r.status, 200);
  const Json j = r.json();
  EXPECT_EQ(j["model"]["name"], loop_->model_name());  // the metrics' model_name label
  EXPECT_EQ(j["tables"]["tier"], "resident");
  EXPECT_EQ(j["tables"]["prefetch"], false);
  ASSERT_TRUE(loop_->config().engram.has_value());
  const std::vector<int>& ids = loop_->config().engram->layer_ids;
  ASSERT_EQ(j["engram"]["layers"].size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(j["engram"]["layers"][i]["layer"], ids[i]);
    EXPECT_EQ(j["engram"]["layers"][i]["rows_requested"], 0);
    EXPECT_EQ(j["engram"]["layers"][i]["overlap"], 1.0);
  }
  EXPECT_EQ(j["serving"]["kv_blocks_total"], loop_->Stats().kv_blocks_total);
  for (const char* path : {"/", "/status.json"}) {
    const Reply bad = Send(port_, "PUT", path, "");
    EXPECT_EQ(bad.status, 405) << path;
    EXPECT_NE(bad.head.find("Allow: GET, HEAD"), std::string::npos) << bad.head;
  }
}

TEST_F(HttpApiTest, CompletionWholeEqualsStreamedAndUsageIsExact) {
  Publish();
  const Json req = {{"model", kModel},
                    {"prompt", "The quick brown fox"},
                    {"max_tokens", 12},
                    {"temperature", 0},
                    {"ignore_eos", true}};
  const Reply whole = Post(port_, "/v1/completions", req);
  ASSERT_EQ(whole.status, 200) << whole.body;
  EXPECT_NE(whole.head.find("Content-Type: application/json"), std::string::npos);
  const Json w = whole.json();
  EXPECT_EQ(w["object"], "text_completion");
  EXPECT_EQ(w["model"], kModel);
  EXPECT_EQ(w["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_TRUE(w["created"].is_number_integer());
  ASSERT_EQ(w["choices"].size(), 1u);
  EXPECT_EQ(w["choices"][0]["index"], 0);
  EXPECT_EQ(w["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(w["choices"][0]["logprobs"].is_null());
  auto prompt_ids = tokenizer_->Encode("The quick brown fox", true);
  ASSERT_TRUE(prompt_ids.ok());
  EXPECT_EQ(w["usage"]["prompt_tokens"], prompt_ids->size());
  EXPECT_EQ(w["usage"]["completion_tokens"], 12);
  EXPECT_EQ(w["usage"]["total_tokens"], prompt_ids->size() + 12);

  Json sreq = req;
  sreq["stream"] = true;
  sreq["stream_options"] = {{"include_usage", true}};
  const Reply streamed = Post(port_, "/v1/completions", sreq);
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  EXPECT_NE(streamed.head.find("Content-Type: text/event-stream"), std::string::npos);
  bool done = false;
  const std::vector<Json> events = Events(streamed.body, &done);
  EXPECT_TRUE(done) << streamed.body;
  ASSERT_GE(events.size(), 2u);
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const Json& e = events[i];
    EXPECT_EQ(e["object"], "text_completion");
    EXPECT_TRUE(e["usage"].is_null());  // include_usage: null until the last chunk
    ASSERT_EQ(e["choices"].size(), 1u);
    text += e["choices"][0]["text"].get<std::string>();
    const bool last = i + 2 == events.size();
    EXPECT_EQ(e["choices"][0]["finish_reason"].is_null(), !last) << e;
  }
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(text, w["choices"][0]["text"]);
  EXPECT_FALSE(w["choices"][0].contains("token_ids"));
  // return_token_ids (vLLM's): the ids, whole and per chunk, decode to the text.
  Json ids_req = req;
  ids_req["return_token_ids"] = true;
  const Json wi = Post(port_, "/v1/completions", ids_req).json();
  const auto ids = wi["choices"][0]["token_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(ids.size(), 12u);
  EXPECT_EQ(utf8::Lossy(tokenizer_->Decode(ids, true)), text);
  ids_req["stream"] = true;
  bool ids_done = false;
  std::vector<int32_t> streamed_ids;
  for (const Json& e : Events(Post(port_, "/v1/completions", ids_req).body, &ids_done)) {
    for (int32_t t : e["choices"][0]["token_ids"]) streamed_ids.push_back(t);
  }
  EXPECT_EQ(streamed_ids, ids);
  const Json& usage = events.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"], w["usage"]);
  EXPECT_TRUE(Drained());
}

TEST_F(HttpApiTest, SeveralPromptsTimesNChoices) {
  Publish();
  const Reply r = Post(port_, "/v1/completions",
                       {{"prompt", Json::array({"one", "two"})},
                        {"n", 2},
                        {"max_tokens", 3},
                        {"seed", 7},
                        {"ignore_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = r.json();
  ASSERT_EQ(j["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(j["choices"][i]["index"], i);
  const size_t p1 = tokenizer_->Encode("one", true)->size();
  const size_t p2 = tokenizer_->Encode("two", true)->size();
  EXPECT_EQ(j["usage"]["prompt_tokens"], p1 + p2);  // each prompt counted once
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  // The same seed gives the same choices again.
  const Reply again = Post(port_, "/v1/completions",
                           {{"prompt", Json::array({"one", "two"})},
                            {"n", 2},
                            {"max_tokens", 3},
                            {"seed", 7},
                            {"ignore_eos", true}});
  ASSERT_EQ(again.status, 200);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(again.json()["choices"][i]["text"], j["choices"][i]["text"]);
  }
  // Token-id prompts.
  const Reply ids = Post(port_, "/v1/completions",
                         {{"prompt", Json::array({Json::array({1, 2, 3}), Json::array({4})})},
                          {"max_tokens", 2},
                          {"ignore_eos", true}});
  ASSERT_EQ(ids.status, 200) << ids.body;
  EXPECT_EQ(ids.json()["usage"]["prompt_tokens"], 4);
  // Streamed with n = 3: every index streams and finishes once.
  const Reply s =
      Post(port_, "/v1/completions",
           {{"prompt", "x"}, {"n", 3}, {"max_tokens", 4}, {"stream", true}, {"ignore_eos", true}});
  ASSERT_EQ(s.status, 200);
  bool done = false;
  int finished[3] = {0, 0, 0};
  for (const Json& e : Events(s.body, &done)) {
    for (const Json& c : e["choices"]) {
      if (!c["finish_reason"].is_null()) ++finished[c["index"].get<int>()];
    }
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(finished[0], 1);
  EXPECT_EQ(finished[1], 1);
  EXPECT_EQ(finished[2], 1);
  EXPECT_TRUE(Drained());
}

TEST_F(HttpApiTest, StopStringsEchoAndLogprobs) {
  Publish();
  const Json base = {
      {"prompt", "Hello"}, {"max_tokens", 16}, {"temperature", 0}, {"ignore_eos", true}};
  const Reply full = Post(port_, "/v1/completions", base);
  ASSERT_EQ(full.status, 200);
  const std::string text = full.json()["choices"][0]["text"];
  ASSERT_GE(text.size(), 4u) << text;
  // Stop at a piece of the greedy text: the text ends before it.
  size_t mid = text.size() / 2;  // a character boundary near the middle
  while (mid > 0 && (static_cast<unsigned char>(text[mid]) & 0xC0) == 0x80) --mid;
  size_t end = mid + 1;
  while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) ++end;
  const std::string stop = text.substr(mid, end - mid);
  Json with_stop = base;
  with_stop["stop"] = stop;
  const Json st = Post(port_, "/v1/completions", with_stop).json();
  EXPECT_EQ(st["choices"][0]["finish_reason"], "stop") << st;
  EXPECT_EQ(st["choices"][0]["text"], text.substr(0, text.find(stop)));

  Json echo = base;
  echo["echo"] = true;
  EXPECT_EQ(Post(port_, "/v1/completions", echo).json()["choices"][0]["text"], "Hello" + text);

  Json lp = base;
  lp["logprobs"] = 3;
  lp["max_tokens"] = 5;
  const Json l = Post(port_, "/v1/completions", lp).json();
  const Json& lps = l["choices"][0]["logprobs"];
  ASSERT_EQ(lps["tokens"].size(), 5u) << l;
  ASSERT_EQ(lps["token_logprobs"].size(), 5u);
  ASSERT_EQ(lps["top_logprobs"].size(), 5u);
  ASSERT_EQ(lps["text_offset"].size(), 5u);
  EXPECT_EQ(lps["text_offset"][0], 0);
  std::string joined;
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_LE(lps["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_EQ(lps["top_logprobs"][i].size(), 3u) << lps["top_logprobs"][i];
    joined += lps["tokens"][i].get<std::string>();
  }
  EXPECT_EQ(joined, l["choices"][0]["text"]);  // greedy: each token is the top one
}

TEST_F(HttpApiTest, ErrorsAreOpenAisBodyWithTheRightStatus) {
  Publish();
  auto expect_error = [&](const Reply& r, int status, const std::string& param) {
    EXPECT_EQ(r.status, status) << r.body;
    const Json j = r.json();
    ASSERT_TRUE(j.is_object()) << r.body;
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    if (param.empty()) {
      EXPECT_TRUE(j["error"]["param"].is_null()) << r.body;
    } else {
      EXPECT_EQ(j["error"]["param"], param) << r.body;
    }
  };
  expect_error(Post(port_, "/v1/completions", {{"prompt", "x"}, {"max_tokens", "9"}}), 400,
               "max_tokens");
  expect_error(Send(port_, "POST", "/v1/completions", "{oops"), 400, "");
  expect_error(Post(port_, "/v1/completions", {{"prompt", "x"}, {"model", "gpt-4"}}), 404, "model");
  expect_error(Post(port_, "/v1/completions", {{"prompt", Json::array({1, 999999999})}}), 400,
               "");  // a token id outside the vocabulary: the engine's check
  expect_error(Send(port_, "GET", "/v1/completions", ""), 405, "");
  expect_error(Send(port_, "GET", "/v2/nothing", ""), 404, "");
  expect_error(Send(port_, "POST", "/v1/completions", std::string(70 << 10, ' ')), 413, "");
  const Reply long_prompt =
      Post(port_, "/v1/completions", {{"prompt", Json(std::vector<int>(9000, 5))}});
  EXPECT_EQ(long_prompt.status, 400) << long_prompt.body;  // longer than the context
  // The server still serves.
  EXPECT_EQ(Post(port_, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}}).status, 200);
  EXPECT_TRUE(Drained());
}

TEST_F(HttpApiTest, KeysAreRequiredExceptOnHealthAndMetrics) {
  HttpApiOptions o;
  o.authorize = [](std::string_view h) { return h == "Bearer sesame-sesame-sesame"; };
  o.metrics = [] { return std::string("engram_up 1\n"); };
  Boot(o);
  Publish();
  const Json req = {{"prompt", "x"}, {"max_tokens", 1}};
  for (const std::string& hdr : {std::string(), std::string("Authorization: Bearer wrong\r\n"),
                                 std::string("Authorization: sesame-sesame-sesame\r\n")}) {
    const Reply r = Post(port_, "/v1/completions", req, hdr);
    EXPECT_EQ(r.status, 401) << hdr;
    EXPECT_EQ(r.json()["error"]["message"], "missing or invalid API key");
    EXPECT_NE(r.head.find("WWW-Authenticate: Bearer"), std::string::npos);
    EXPECT_EQ(Send(port_, "GET", "/v1/models", "", hdr).status, 401);
  }
  EXPECT_EQ(
      Post(port_, "/v1/completions", req, "Authorization: Bearer sesame-sesame-sesame\r\n").status,
      200);
  EXPECT_EQ(Send(port_, "GET", "/health", "").status, 200);
  const Reply m = Send(port_, "GET", "/metrics", "");
  EXPECT_EQ(m.status, 200);
  EXPECT_EQ(m.body, "engram_up 1\n");
  EXPECT_EQ(Send(port_, "GET", "/", "").status, 200);  // the status page follows /metrics
  EXPECT_EQ(Send(port_, "GET", "/status.json", "").status, 200);
  EXPECT_TRUE(Drained());

  o.metrics_require_auth = true;
  Boot(o);
  Publish();
  EXPECT_EQ(Send(port_, "GET", "/metrics", "").status, 401);
  EXPECT_EQ(Send(port_, "GET", "/", "").status, 401);
  EXPECT_EQ(Send(port_, "GET", "/status.json", "").status, 401);
  EXPECT_EQ(
      Send(port_, "GET", "/metrics", "", "Authorization: Bearer sesame-sesame-sesame\r\n").status,
      200);
}

TEST_F(HttpApiTest, AClientThatVanishesMidStreamCancelsAtOnce) {
  Publish();
  const std::string body =
      Json{{"prompt", "x"}, {"max_tokens", 2000}, {"ignore_eos", true}, {"stream", true}}.dump();
  const int fd = Dial(port_);
  ASSERT_GE(fd, 0);
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[4096];
  while (got.find("\"text\"") == std::string::npos) {  // the first token arrived
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0) << got;
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(loop_->InFlight(), 1);
  const auto t0 = std::chrono::steady_clock::now();
  ::close(fd);
  EXPECT_TRUE(Drained(3000ms)) << "the request still runs 3 s after its client left";
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 3.0);
  const ServingStats st = loop_->Stats();
  EXPECT_EQ(st.finished_by_reason.count("cancelled"), 1u);
  EXPECT_LT(st.generation_tokens, 2000);
  // And a whole (non-streamed) request whose client leaves is cancelled too.
  const std::string body2 =
      Json{{"prompt", "x"}, {"max_tokens", 2000}, {"ignore_eos", true}}.dump();
  const int fd2 = Dial(port_);
  const std::string req2 = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                           std::to_string(body2.size()) + "\r\n\r\n" + body2;
  ASSERT_EQ(::send(fd2, req2.data(), req2.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req2.size()));
  const auto t1 = std::chrono::steady_clock::now();
  while (loop_->InFlight() == 0 && std::chrono::steady_clock::now() - t1 < 3s) {
    std::this_thread::sleep_for(1ms);
  }
  ::close(fd2);
  EXPECT_TRUE(Drained(3000ms));
}

TEST_F(HttpApiTest, AFullQueueIs503WithRetryAfter) {
  Boot({}, /*max_running=*/1, /*max_waiting=*/1);
  Publish();
  const std::string body =
      Json{{"prompt", "x"}, {"max_tokens", 2000}, {"ignore_eos", true}, {"stream", true}}.dump();
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  // Three long streams at once where one runs and one waits at most: one (or two) is refused
  // at once; the accepted ones send nothing until they run (so give up on them after 3 s).
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    fds.push_back(Dial(port_));
    ASSERT_EQ(::send(fds.back(), req.data(), req.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(req.size()));
  }
  std::string refused;
  for (int fd : fds) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 3000) != 1) continue;  // accepted, waiting for its turn
    std::string got;
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) got.assign(buf, static_cast<size_t>(n));
    if (StatusOf(got) == 503 && refused.empty()) {
      refused = got;
      ssize_t m;
      while ((m = ::read(fd, buf, sizeof buf)) > 0) refused.append(buf, static_cast<size_t>(m));
    }
  }
  ASSERT_FALSE(refused.empty()) << "3 long requests were all accepted with room for 2";
  EXPECT_NE(refused.find("Retry-After: 1"), std::string::npos) << refused;
  const Json err = Json::parse(refused.substr(refused.find("\r\n\r\n") + 4));
  EXPECT_EQ(err["error"]["type"], "server_error");
  EXPECT_EQ(err["error"]["code"], "overloaded");
  for (int fd : fds) ::close(fd);
  EXPECT_TRUE(Drained());
}

// A stand-in for the model's chat template (tested on its own in tests/unit/text): "role:
// content" lines, plus "assistant:" when a generation prompt is asked for.
Result<std::string> LinesTemplate(const nlohmann::ordered_json& messages,
                                  bool add_generation_prompt, const nlohmann::ordered_json&,
                                  const nlohmann::ordered_json&) {
  std::string out;
  for (const auto& m : messages) {
    out += m["role"].get<std::string>() + ": " +
           (m["content"].is_string() ? m["content"].get<std::string>() : "") + "\n";
  }
  if (add_generation_prompt) out += "assistant:";
  return out;
}

TEST_F(HttpApiTest, ChatWholeAndStreamedThroughTheTemplate) {
  Publish(LinesTemplate);
  const Json messages = Json::array({{{"role", "system"}, {"content", "be brief"}},
                                     {{"role", "user"}, {"content", "¿Qué tal? 你好"}}});
  const Json req = {
      {"messages", messages}, {"max_tokens", 8}, {"temperature", 0}, {"ignore_eos", true}};
  const Reply whole = Post(port_, "/v1/chat/completions", req);
  ASSERT_EQ(whole.status, 200) << whole.body;
  const Json w = whole.json();
  EXPECT_EQ(w["object"], "chat.completion");
  EXPECT_EQ(w["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(w["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(w["choices"][0]["finish_reason"], "length");
  // The prompt is the rendered text, encoded without adding BOS.
  const std::string rendered = *LinesTemplate(messages, true, nullptr, nullptr);
  EXPECT_EQ(w["usage"]["prompt_tokens"], tokenizer_->Encode(rendered, false)->size());
  EXPECT_EQ(w["usage"]["completion_tokens"], 8);
  const Reply tok = Post(port_, "/tokenize", {{"messages", messages}});
  EXPECT_EQ(tok.json()["tokens"].get<std::vector<int32_t>>(), *tokenizer_->Encode(rendered, false));

  Json sreq = req;
  sreq["stream"] = true;
  const Reply streamed = Post(port_, "/v1/chat/completions", sreq);
  ASSERT_EQ(streamed.status, 200);
  bool done = false;
  const std::vector<Json> events = Events(streamed.body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");  // the role comes first
  std::string content;
  for (const Json& e : events) {
    if (e["choices"][0]["delta"].contains("content")) {
      content += e["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(content, w["choices"][0]["message"]["content"]);
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "length");

  Json lp = req;
  lp["logprobs"] = true;
  lp["top_logprobs"] = 2;
  lp["max_tokens"] = 3;
  const Json l = Post(port_, "/v1/chat/completions", lp).json();
  const Json& c = l["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(c.size(), 3u) << l;
  for (const Json& t : c) {
    EXPECT_TRUE(t["token"].is_string());
    EXPECT_TRUE(t["bytes"].is_array());
    EXPECT_EQ(t["top_logprobs"].size(), 2u);
  }
  EXPECT_EQ(Post(port_, "/v1/chat/completions", {{"messages", "hi"}}).json()["error"]["param"],
            "messages");
}

TEST_F(HttpApiTest, ChatWithoutATemplateIsAClear400) {
  Publish();
  const Reply r = Post(port_, "/v1/chat/completions",
                       {{"messages", Json::array({{{"role", "user"}, {"content", "x"}}})}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("no chat template"),
            std::string::npos)
      << r.body;
}

TEST_F(HttpApiTest, TokenizeDetokenizeModelsVersion) {
  Publish();
  const Reply t = Post(port_, "/tokenize", {{"prompt", "Hello world"}});
  ASSERT_EQ(t.status, 200) << t.body;
  const std::vector<int32_t> ids = *tokenizer_->Encode("Hello world", true);
  EXPECT_EQ(t.json()["tokens"].get<std::vector<int32_t>>(), ids);
  EXPECT_EQ(t.json()["count"], ids.size());
  EXPECT_EQ(t.json()["max_model_len"], loop_->config().max_position_embeddings);
  const Reply plain =
      Post(port_, "/tokenize",
           {{"prompt", "Hello world"}, {"add_special_tokens", false}, {"return_token_strs", true}});
  EXPECT_EQ(plain.json()["tokens"].get<std::vector<int32_t>>(),
            *tokenizer_->Encode("Hello world", false));
  EXPECT_EQ(plain.json()["token_strs"].size(), plain.json()["count"]);
  const Reply d =
      Post(port_, "/detokenize", {{"tokens", *tokenizer_->Encode("Hello world", false)}});
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.json()["prompt"], "Hello world");
  EXPECT_EQ(Post(port_, "/detokenize", {{"tokens", {1, -1}}}).json()["error"]["param"],
            "tokens[1]");
  EXPECT_EQ(Post(port_, "/tokenize", {{"nothing", 1}}).status, 400);

  const Json m = Send(port_, "GET", "/v1/models", "").json();
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], kModel);
  EXPECT_EQ(m["data"][0]["object"], "model");
  EXPECT_TRUE(Send(port_, "GET", "/version", "").json()["version"].is_string());
  const Reply metrics = Send(port_, "GET", "/metrics", "");  // the loop's own exposition
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.head.find("text/plain; version=0.0.4"), std::string::npos) << metrics.head;
  EXPECT_NE(metrics.body.find("engram_num_requests_running"), std::string::npos);
}

}  // namespace
}  // namespace engram
