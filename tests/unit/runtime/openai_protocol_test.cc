// ParseOpenAiRequest: every field engramd knows, its type and range errors (naming the
// field), OpenAI's defaults, fields it cannot honour refused instead of dropped, unknown fields
// ignored; ParseJsonBody and OpenAI's error body.
#include "runtime/openai_protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace engram {
namespace {

using Json = nlohmann::ordered_json;

OpenAiRequest Ok(const std::string& body, bool chat = false) {
  OpenAiRequest r;
  auto e = ParseOpenAiRequest(Json::parse(body), chat, OpenAiLimits{}, &r);
  EXPECT_FALSE(e.has_value()) << body << " -> " << (e ? e->message : "");
  return r;
}

ApiError Bad(const std::string& body, bool chat = false) {
  OpenAiRequest r;
  auto e = ParseOpenAiRequest(Json::parse(body), chat, OpenAiLimits{}, &r);
  EXPECT_TRUE(e.has_value()) << body << " was accepted";
  return e.value_or(ApiError{});
}

TEST(OpenAiProtocol, PromptInEveryForm) {
  OpenAiRequest a = Ok(R"({"prompt": "hi"})");
  ASSERT_EQ(a.prompts.size(), 1u);
  EXPECT_EQ(a.prompts[0].text, "hi");
  OpenAiRequest b = Ok(R"({"prompt": ["a", "b"]})");
  ASSERT_EQ(b.prompts.size(), 2u);
  EXPECT_EQ(b.prompts[1].text, "b");
  OpenAiRequest c = Ok(R"({"prompt": [1, 2, 3]})");
  ASSERT_EQ(c.prompts.size(), 1u);
  EXPECT_FALSE(c.prompts[0].text.has_value());
  EXPECT_EQ(c.prompts[0].ids, (std::vector<int32_t>{1, 2, 3}));
  OpenAiRequest d = Ok(R"({"prompt": [[1], [2, 3]]})");
  ASSERT_EQ(d.prompts.size(), 2u);
  EXPECT_EQ(d.prompts[1].ids, (std::vector<int32_t>{2, 3}));

  EXPECT_EQ(Bad(R"({})").param, "prompt");
  EXPECT_EQ(Bad(R"({"prompt": 5})").param, "prompt");
  EXPECT_EQ(Bad(R"({"prompt": []})").param, "prompt");
  EXPECT_EQ(Bad(R"({"prompt": ["a", 1]})").param, "prompt[1]");
  EXPECT_EQ(Bad(R"({"prompt": [[1], []]})").param, "prompt[1]");
  EXPECT_EQ(Bad(R"({"prompt": [1, -2]})").param, "prompt[1]");
  EXPECT_EQ(Bad(R"({"prompt": [1, 2.5]})").param, "prompt[1]");
  EXPECT_EQ(Bad(R"({"prompt": [1, 4294967296]})").param, "prompt[1]");
}

TEST(OpenAiProtocol, DefaultsAreOpenAis) {
  OpenAiRequest r = Ok(R"({"prompt": "x"})");
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.max_tokens, 0);  // the server's default
  EXPECT_FLOAT_EQ(r.sampling.temperature, 1.f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 1.f);
  EXPECT_EQ(r.logprobs, -1);
  EXPECT_TRUE(r.skip_special_tokens);
  EXPECT_FALSE(r.seed.has_value());
}

TEST(OpenAiProtocol, EveryKnownFieldIsRead) {
  OpenAiRequest r = Ok(R"({"model": "m", "prompt": "x", "max_tokens": 7, "temperature": 0,
      "top_p": 0.5, "top_k": 40, "min_p": 0.1, "n": 3, "stop": ["a", "bb"], "seed": 42,
      "presence_penalty": 1.5, "frequency_penalty": -0.5, "repetition_penalty": 1.1,
      "logprobs": 2, "echo": false, "user": "u", "ignore_eos": true, "stop_token_ids": [5],
      "skip_special_tokens": false, "stream": true, "stream_options": {"include_usage": true},
      "some_future_field": {"x": 1}})");
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.1f);
  EXPECT_EQ(r.n, 3);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "bb"}));
  EXPECT_EQ(r.seed, 42u);
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 1.5f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.sampling.repetition_penalty, 1.1f);
  EXPECT_EQ(r.logprobs, 2);
  EXPECT_EQ(r.user, "u");
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_EQ(r.stop_token_ids, (std::vector<int32_t>{5}));
  EXPECT_FALSE(r.skip_special_tokens);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(Ok(R"({"prompt": "x", "stop": "end"})").stop, (std::vector<std::string>{"end"}));
  EXPECT_EQ(Ok(R"({"prompt": "x", "top_k": -1})").sampling.top_k, 0);
  EXPECT_EQ(Ok(R"({"prompt": "x", "max_tokens": 16.0})").max_tokens, 16);
  EXPECT_EQ(Ok(R"({"prompt": "x", "seed": -1})").seed, ~uint64_t{0});
  // max_completion_tokens is the newer name and wins.
  EXPECT_EQ(Ok(R"({"prompt": "x", "max_tokens": 3, "max_completion_tokens": 9})").max_tokens, 9);
  // null means absent.
  EXPECT_EQ(Ok(R"({"prompt": "x", "max_tokens": null, "stop": null, "n": null})").n, 1);
}

TEST(OpenAiProtocol, WrongTypesAndRangesNameTheField) {
  struct Case {
    const char* body;
    const char* param;
  } cases[] = {
      {R"({"prompt": "x", "max_tokens": "9"})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
      {R"({"prompt": "x", "max_completion_tokens": -1})", "max_completion_tokens"},
      {R"({"prompt": "x", "temperature": -0.1})", "temperature"},
      {R"({"prompt": "x", "temperature": "hot"})", "temperature"},
      {R"({"prompt": "x", "top_p": 0})", "top_p"},
      {R"({"prompt": "x", "top_p": 1.5})", "top_p"},
      {R"({"prompt": "x", "top_k": -2})", "top_k"},
      {R"({"prompt": "x", "min_p": 2})", "min_p"},
      {R"({"prompt": "x", "n": 0})", "n"},
      {R"({"prompt": "x", "n": 1000})", "n"},
      {R"({"prompt": "x", "n": true})", "n"},
      {R"({"prompt": "x", "stop": 3})", "stop"},
      {R"({"prompt": "x", "stop": ["a", 3]})", "stop[1]"},
      {R"({"prompt": "x", "seed": "s"})", "seed"},
      {R"({"prompt": "x", "seed": 1.5})", "seed"},
      {R"({"prompt": "x", "presence_penalty": 3})", "presence_penalty"},
      {R"({"prompt": "x", "frequency_penalty": -2.5})", "frequency_penalty"},
      {R"({"prompt": "x", "repetition_penalty": 0})", "repetition_penalty"},
      {R"({"prompt": "x", "logprobs": 21})", "logprobs"},
      {R"({"prompt": "x", "logprobs": true})", "logprobs"},
      {R"({"prompt": "x", "echo": "yes"})", "echo"},
      {R"({"prompt": "x", "stream": 1})", "stream"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options"},
      {R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage"},
      {R"({"prompt": "x", "stream": true, "stream_options": []})", "stream_options"},
      {R"({"prompt": "x", "user": 5})", "user"},
      {R"({"prompt": "x", "model": 5})", "model"},
      {R"({"prompt": "x", "stop_token_ids": [1, "2"]})", "stop_token_ids[1]"},
      {R"({"prompt": "x", "ignore_eos": "no"})", "ignore_eos"},
      {R"({"prompt": "x", "skip_special_tokens": 0})", "skip_special_tokens"},
      // Known but not honoured: refused, never dropped.
      {R"({"prompt": "x", "suffix": "tail"})", "suffix"},
      {R"({"prompt": "x", "best_of": 3})", "best_of"},
      {R"({"prompt": "x", "logit_bias": {"5": 10}})", "logit_bias"},
      {R"({"prompt": "x", "echo": true, "logprobs": 1})", "echo"},
  };
  for (const Case& c : cases) {
    const ApiError e = Bad(c.body);
    EXPECT_EQ(e.param, c.param) << c.body << ": " << e.message;
    EXPECT_EQ(e.http_status, 400) << c.body;
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_NE(e.message.find(c.param), std::string::npos) << c.body << ": " << e.message;
  }
  // Fine: best_of equal to n, an empty logit_bias, an empty suffix.
  Ok(R"({"prompt": "x", "best_of": 1, "logit_bias": {}, "suffix": ""})");
}

TEST(OpenAiProtocol, ChatMessagesAndLogprobs) {
  OpenAiRequest r = Ok(R"({"messages": [{"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "1"}]}],
      "logprobs": true, "top_logprobs": 3, "tools": [{"type": "function"}],
      "chat_template_kwargs": {"enable_thinking": false}, "add_generation_prompt": false})",
                       /*chat=*/true);
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1]["content"], "a\nb");  // text parts joined as vLLM does
  EXPECT_TRUE(r.messages[2]["content"].is_null());
  EXPECT_EQ(r.messages[2]["tool_calls"][0]["id"], "1");  // passed through to the template
  EXPECT_EQ(r.logprobs, 3);
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.chat_template_kwargs["enable_thinking"], false);
  EXPECT_FALSE(r.add_generation_prompt);
  EXPECT_EQ(
      Ok(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})", true).logprobs,
      0);
  EXPECT_EQ(Ok(R"({"messages": [{"role": "user", "content": "x"}]})", true).logprobs, -1);

  EXPECT_EQ(Bad(R"({})", true).param, "messages");
  EXPECT_EQ(Bad(R"({"messages": []})", true).param, "messages");
  EXPECT_EQ(Bad(R"({"messages": {"role": "user"}})", true).param, "messages");
  EXPECT_EQ(Bad(R"({"messages": ["hi"]})", true).param, "messages[0]");
  EXPECT_EQ(Bad(R"({"messages": [{"content": "x"}]})", true).param, "messages[0].role");
  EXPECT_EQ(Bad(R"({"messages": [{"role": 1, "content": "x"}]})", true).param, "messages[0].role");
  EXPECT_EQ(Bad(R"({"messages": [{"role": "user", "content": 5}]})", true).param,
            "messages[0].content");
  EXPECT_EQ(
      Bad(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})", true).param,
      "messages[0].content[0].type");
  EXPECT_EQ(Bad(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})", true).param,
            "messages[0].content[0].text");
  EXPECT_EQ(
      Bad(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", true).param,
      "top_logprobs");
  EXPECT_EQ(Bad(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                   "top_logprobs": 21})",
                true)
                .param,
            "top_logprobs");
  EXPECT_EQ(Bad(R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})", true).param,
            "tools");
  EXPECT_EQ(Bad(R"({"messages": [{"role": "user", "content": "x"}],
                   "response_format": {"type": "json_object"}})",
                true)
                .param,
            "response_format");
  Ok(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"}})",
     true);
}

TEST(OpenAiProtocol, JsonBodyAndErrorBody) {
  Json j;
  EXPECT_FALSE(ParseJsonBody(R"({"a": 1})", &j).has_value());
  EXPECT_EQ(j["a"], 1);
  auto e = ParseJsonBody("{not json", &j);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->message.find("not valid JSON"), std::string::npos);
  e = ParseJsonBody("[1, 2]", &j);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->message.find("an array"), std::string::npos) << e->message;
  EXPECT_TRUE(ParseJsonBody("", &j).has_value());
  // Text that is not UTF-8 never gets past the body: a lone surrogate, a raw invalid byte.
  EXPECT_TRUE(ParseJsonBody("{\"prompt\": \"\\udc00\"}", &j).has_value());
  EXPECT_TRUE(ParseJsonBody("{\"prompt\": \"\xff\"}", &j).has_value());

  ApiError err = BadField("n", "n = 0 is out of range");
  const Json body = Json::parse(ErrorBody(err));
  EXPECT_EQ(body["error"]["message"], "n = 0 is out of range");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "n");
  EXPECT_TRUE(body["error"]["code"].is_null());
  EXPECT_TRUE(Json::parse(ErrorBody(BadField("", "x")))["error"]["param"].is_null());
}

}  // namespace
}  // namespace engram
