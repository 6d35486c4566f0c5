#include "runtime/openai_protocol.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "text/stop_matcher.h"
#include "text/utf8.h"

namespace engram {
namespace {

using Json = nlohmann::ordered_json;

const char* TypeName(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "an integer";
    case Json::value_t::number_float:
      return "a number";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::object:
      return "an object";
    default:
      return "a value";
  }
}

ApiError WrongType(const std::string& param, const Json& v, const char* expected) {
  return BadField(param, fmt::format("{} is {}, expected {}", param, TypeName(v), expected));
}

// The field if present and not null.
const Json* Field(const Json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<ApiError> GetBool(const Json& body, const char* name, bool* out) {
  const Json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return WrongType(name, *v, "a boolean");
  *out = v->get<bool>();
  return std::nullopt;
}

std::optional<ApiError> GetInt(const Json& body, const std::string& name, int64_t lo, int64_t hi,
                               std::optional<int64_t>* out) {
  const Json* v = Field(body, name.c_str());
  if (v == nullptr) return std::nullopt;
  int64_t x = 0;
  if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    x = u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
            ? std::numeric_limits<int64_t>::max()
            : static_cast<int64_t>(u);
  } else if (v->is_number_float() && std::nearbyint(v->get<double>()) == v->get<double>() &&
             std::fabs(v->get<double>()) < 9e15) {
    x = static_cast<int64_t>(v->get<double>());  // 16.0 is an integer in JSON's eyes
  } else {
    return WrongType(name, *v, "an integer");
  }
  if (x < lo || x > hi) {
    return BadField(name, fmt::format("{} = {} is out of range, expected {}..{}", name, x, lo, hi));
  }
  *out = x;
  return std::nullopt;
}

std::optional<ApiError> GetNumber(const Json& body, const char* name, double lo, double hi,
                                  float* out) {
  const Json* v = Field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return WrongType(name, *v, "a number");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) {
    return BadField(name, fmt::format("{} = {} is out of range, expected {}..{}", name, x, lo, hi));
  }
  *out = static_cast<float>(x);
  return std::nullopt;
}

std::optional<ApiError> CheckUtf8(const std::string& param, const std::string& s) {
  if (const size_t bad = utf8::FirstInvalid(s); bad != utf8::kValid) {
    return BadField(param, fmt::format("{}: byte {} is not valid UTF-8", param, bad));
  }
  return std::nullopt;
}

std::optional<ApiError> TokenIds(const Json& arr, const std::string& param,
                                 std::vector<int32_t>* out) {
  out->reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const Json& t = arr[i];
    if (!t.is_number_integer() && !t.is_number_unsigned()) {
      return WrongType(fmt::format("{}[{}]", param, i), t, "an integer token id");
    }
    const int64_t id = t.is_number_unsigned() && t.get<uint64_t>() > INT32_MAX
                           ? int64_t{INT32_MAX} + 1
                           : t.get<int64_t>();
    if (id < 0 || id > INT32_MAX) {
      return BadField(
          fmt::format("{}[{}]", param, i),
          fmt::format("{}[{}] = {} is not a token id (expected 0..{})", param, i, id, INT32_MAX));
    }
    out->push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

std::optional<ApiError> ParsePrompt(const Json& body, const OpenAiLimits& limits,
                                    OpenAiRequest* out) {
  const Json* p = Field(body, "prompt");
  if (p == nullptr) return BadField("prompt", "prompt is required");
  auto add_text = [&](const Json& s, const std::string& param) -> std::optional<ApiError> {
    if (auto e = CheckUtf8(param, s.get_ref<const std::string&>())) return e;
    out->prompts.push_back(PromptInput{s.get<std::string>(), {}});
    return std::nullopt;
  };
  if (p->is_string()) return add_text(*p, "prompt");
  if (!p->is_array()) {
    return WrongType("prompt", *p,
                     "a string, an array of strings, an array of token ids or an array of "
                     "arrays of token ids");
  }
  if (p->empty()) return BadField("prompt", "prompt is an empty array");
  const Json& first = (*p)[0];
  if (first.is_number()) {  // one prompt as token ids
    PromptInput in;
    if (auto e = TokenIds(*p, "prompt", &in.ids)) return e;
    out->prompts.push_back(std::move(in));
    return std::nullopt;
  }
  if (p->size() > static_cast<size_t>(limits.max_prompts)) {
    return BadField("prompt", fmt::format("prompt holds {} prompts, at most {} are accepted",
                                          p->size(), limits.max_prompts));
  }
  for (size_t i = 0; i < p->size(); ++i) {
    const Json& e = (*p)[i];
    const std::string param = fmt::format("prompt[{}]", i);
    if (e.is_string() && first.is_string()) {
      if (auto err = add_text(e, param)) return err;
    } else if (e.is_array() && first.is_array()) {
      if (e.empty()) return BadField(param, param + " is an empty array of token ids");
      PromptInput in;
      if (auto err = TokenIds(e, param, &in.ids)) return err;
      out->prompts.push_back(std::move(in));
    } else {
      return WrongType(param, e,
                       first.is_string() ? "a string (like prompt[0])"
                                         : "an array of token ids (like prompt[0])");
    }
  }
  return std::nullopt;
}

// A message's content as the string the template sees: a string, null (kept), or an array of
// content parts whose text parts are joined by "\n" (vLLM's "string" content format).
std::optional<ApiError> FlattenContent(Json* content, const std::string& param) {
  if (content->is_null()) return std::nullopt;
  if (content->is_string()) return CheckUtf8(param, content->get_ref<const std::string&>());
  if (!content->is_array()) return WrongType(param, *content, "a string or an array of parts");
  std::string text;
  for (size_t i = 0; i < content->size(); ++i) {
    const Json& part = (*content)[i];
    const std::string pp = fmt::format("{}[{}]", param, i);
    if (!part.is_object()) return WrongType(pp, part, "a content part object");
    const Json* type = Field(part, "type");
    if (type == nullptr || !type->is_string()) {
      return BadField(pp + ".type", pp + ".type is required: a string");
    }
    if (*type != "text") {
      return BadField(pp + ".type", fmt::format("{}.type \"{}\" is not supported (engramd serves "
                                                "text models: only \"text\" parts)",
                                                pp, type->get<std::string>()));
    }
    const Json* t = Field(part, "text");
    if (t == nullptr || !t->is_string()) {
      return BadField(pp + ".text", pp + ".text is required: a string");
    }
    if (auto e = CheckUtf8(pp + ".text", t->get_ref<const std::string&>())) return e;
    if (!text.empty()) text += "\n";
    text += t->get<std::string>();
  }
  *content = std::move(text);
  return std::nullopt;
}

std::optional<ApiError> ParseMessages(const Json& body, OpenAiRequest* out) {
  const Json* m = Field(body, "messages");
  if (m == nullptr) return BadField("messages", "messages is required");
  if (!m->is_array()) return WrongType("messages", *m, "an array of message objects");
  if (m->empty()) return BadField("messages", "messages is an empty array");
  out->messages = *m;
  for (size_t i = 0; i < out->messages.size(); ++i) {
    Json& msg = out->messages[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!msg.is_object()) return WrongType(param, msg, "a message object");
    const Json* role = Field(msg, "role");
    if (role == nullptr) return BadField(param + ".role", param + ".role is required");
    if (!role->is_string()) return WrongType(param + ".role", *role, "a string");
    if (auto e = CheckUtf8(param + ".role", role->get_ref<const std::string&>())) return e;
    if (auto it = msg.find("content"); it != msg.end()) {
      if (auto e = FlattenContent(&*it, param + ".content")) return e;
    }
  }
  return std::nullopt;
}

std::optional<ApiError> ParseStop(const Json& body, const OpenAiLimits& limits,
                                  OpenAiRequest* out) {
  const Json* s = Field(body, "stop");
  if (s == nullptr) return std::nullopt;
  if (s->is_string()) {
    out->stop.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    if (s->size() > limits.max_stop_strings) {
      return BadField("stop", fmt::format("stop holds {} strings, at most {} are accepted",
                                          s->size(), limits.max_stop_strings));
    }
    for (size_t i = 0; i < s->size(); ++i) {
      if (!(*s)[i].is_string()) return WrongType(fmt::format("stop[{}]", i), (*s)[i], "a string");
      out->stop.push_back((*s)[i].get<std::string>());
    }
  } else {
    return WrongType("stop", *s, "a string or an array of strings");
  }
  for (size_t i = 0; i < out->stop.size(); ++i) {
    if (auto e = CheckUtf8(fmt::format("stop[{}]", i), out->stop[i])) return e;
  }
  if (Status st = StopMatcher::Validate(out->stop); !st.ok()) {
    return BadField("stop", std::string(st.message()));
  }
  return std::nullopt;
}

}  // namespace

ApiError BadField(std::string param, std::string message) {
  ApiError e;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

std::string ErrorBody(const ApiError& e) {
  Json err = {{"message", e.message},
              {"type", e.type},
              {"param", e.param.empty() ? Json(nullptr) : Json(e.param)},
              {"code", e.code.empty() ? Json(nullptr) : Json(e.code)}};
  return Json{{"error", std::move(err)}}.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::optional<ApiError> ParseJsonBody(const std::string& body, nlohmann::ordered_json* out) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return BadField("", "the request body is not valid JSON (expected a JSON object)");
  }
  if (!j.is_object()) {
    return BadField("", fmt::format("the request body is {}, expected a JSON object", TypeName(j)));
  }
  *out = std::move(j);
  return std::nullopt;
}

std::optional<ApiError> ParseOpenAiRequest(const nlohmann::ordered_json& body, bool chat,
                                           const OpenAiLimits& limits, OpenAiRequest* out) {
  OpenAiRequest r;
  r.chat = chat;
  r.sampling.temperature = 1.f;  // OpenAI's default
  if (const Json* m = Field(body, "model")) {
    if (!m->is_string()) return WrongType("model", *m, "a string");
    r.model = m->get<std::string>();
  }
  if (chat) {
    if (auto e = ParseMessages(body, &r)) return e;
    if (auto e = GetBool(body, "add_generation_prompt", &r.add_generation_prompt)) return e;
    if (const Json* t = Field(body, "tools")) {
      if (!t->is_array()) return WrongType("tools", *t, "an array of tool objects");
      if (!t->empty()) r.tools = *t;
    }
    if (const Json* k = Field(body, "chat_template_kwargs")) {
      if (!k->is_object()) return WrongType("chat_template_kwargs", *k, "an object");
      r.chat_template_kwargs = *k;
    }
    if (const Json* f = Field(body, "response_format")) {
      const Json* type = f->is_object() ? Field(*f, "type") : nullptr;
      if (type == nullptr || !type->is_string()) {
        return BadField("response_format", "response_format must be an object with a type");
      }
      if (*type != "text") {
        return BadField("response_format",
                        fmt::format("response_format type \"{}\" is not supported (only \"text\")",
                                    type->get<std::string>()));
      }
    }
  } else {
    if (auto e = ParsePrompt(body, limits, &r)) return e;
    if (auto e = GetBool(body, "echo", &r.echo)) return e;
    if (const Json* s = Field(body, "suffix")) {
      if (!s->is_string()) return WrongType("suffix", *s, "a string");
      if (!s->get_ref<const std::string&>().empty()) {
        return BadField("suffix", "suffix is not supported (no model served here fills in)");
      }
    }
  }
  std::optional<int64_t> i;
  if (auto e = GetInt(body, "n", 1, limits.max_n, &i)) return e;
  if (i) r.n = static_cast<int>(*i);
  i.reset();
  if (auto e = GetInt(body, "best_of", 1, limits.max_n, &i)) return e;
  if (i && *i != r.n) {
    return BadField("best_of", "best_of other than n is not supported");
  }
  if (auto e = GetBool(body, "stream", &r.stream)) return e;
  if (const Json* so = Field(body, "stream_options")) {
    if (!so->is_object()) return WrongType("stream_options", *so, "an object");
    if (!r.stream) {
      return BadField("stream_options", "stream_options is only allowed with stream: true");
    }
    if (auto e = GetBool(*so, "include_usage", &r.include_usage)) {
      e->param = "stream_options.include_usage";
      e->message = "stream_options." + e->message;
      return e;
    }
  }
  // max_completion_tokens (the newer name) wins over max_tokens when both are sent.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    i.reset();
    if (auto e = GetInt(body, name, 1, std::numeric_limits<int32_t>::max(), &i)) return e;
    if (i) r.max_tokens = static_cast<int>(*i);
  }
  SamplingParams& s = r.sampling;
  if (auto e = GetNumber(body, "temperature", 0, 100, &s.temperature)) return e;
  if (auto e = GetNumber(body, "top_p", 0, 1, &s.top_p)) return e;
  if (Field(body, "top_p") && s.top_p <= 0.f) {
    return BadField("top_p", "top_p = 0 is out of range, expected a number in (0, 1]");
  }
  i.reset();
  if (auto e = GetInt(body, "top_k", -1, std::numeric_limits<int32_t>::max(), &i)) return e;
  if (i) s.top_k = *i <= 0 ? 0 : static_cast<int>(*i);  // -1 and 0: off (vLLM)
  if (auto e = GetNumber(body, "min_p", 0, 1, &s.min_p)) return e;
  if (auto e = GetNumber(body, "presence_penalty", -2, 2, &s.presence_penalty)) return e;
  if (auto e = GetNumber(body, "frequency_penalty", -2, 2, &s.frequency_penalty)) return e;
  if (auto e = GetNumber(body, "repetition_penalty", 1e-6, 100, &s.repetition_penalty)) return e;
  if (const Json* seed = Field(body, "seed")) {
    if (seed->is_number_unsigned()) {
      r.seed = seed->get<uint64_t>();
    } else if (seed->is_number_integer()) {
      r.seed = static_cast<uint64_t>(seed->get<int64_t>());
    } else {
      return WrongType("seed", *seed, "an integer");
    }
  }
  if (auto e = ParseStop(body, limits, &r)) return e;
  if (const Json* st = Field(body, "stop_token_ids")) {
    if (!st->is_array()) return WrongType("stop_token_ids", *st, "an array of token ids");
    if (auto e = TokenIds(*st, "stop_token_ids", &r.stop_token_ids)) return e;
  }
  if (auto e = GetBool(body, "ignore_eos", &r.ignore_eos)) return e;
  if (auto e = GetBool(body, "skip_special_tokens", &r.skip_special_tokens)) return e;
  if (auto e = GetBool(body, "return_token_ids", &r.return_token_ids)) return e;
  if (const Json* lb = Field(body, "logit_bias")) {
    if (!lb->is_object()) return WrongType("logit_bias", *lb, "an object");
    if (!lb->empty()) return BadField("logit_bias", "logit_bias is not supported");
  }
  if (chat) {
    bool want = false;
    if (auto e = GetBool(body, "logprobs", &want)) return e;
    i.reset();
    if (auto e = GetInt(body, "top_logprobs", 0, limits.max_logprobs, &i)) return e;
    if (i && !want && *i > 0) {
      return BadField("top_logprobs", "top_logprobs needs logprobs: true");
    }
    if (want) r.logprobs = i ? static_cast<int>(*i) : 0;
  } else {
    i.reset();
    if (auto e = GetInt(body, "logprobs", 0, limits.max_logprobs, &i)) return e;
    if (i) r.logprobs = static_cast<int>(*i);
    if (r.echo && r.logprobs >= 0) {
      return BadField("echo",
                      "echo together with logprobs is not supported (prompt logprobs "
                      "are not computed)");
    }
  }
  if (const Json* u = Field(body, "user")) {
    if (!u->is_string()) return WrongType("user", *u, "a string");
    r.user = u->get<std::string>();
  }
  if (Status st = s.Validate(); !st.ok()) return BadField("", std::string(st.message()));
  *out = std::move(r);
  return std::nullopt;
}

}  // namespace engram
