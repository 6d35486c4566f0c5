// The OpenAI-compatible request bodies (POST /v1/completions, /v1/chat/completions) as engramd
// reads them, and the error body it answers with. Parsing is pure (no model, no engine): it
// checks every field it knows for type and range, and ignores fields it does not know, as
// OpenAI does. Fields it knows but cannot honour (suffix, best_of > n, logit_bias, non-text
// content parts, response_format other than text, echo with logprobs) are refused with a 400
// naming the field, never silently dropped. docs/api.md lists every field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/sampler.h"

namespace engram {

// OpenAI's error object: {"error": {"message", "type", "param", "code"}}, with the HTTP status.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault; empty -> null
  std::string code;   // a machine-readable code; empty -> null
};
std::string ErrorBody(const ApiError& e);
ApiError BadField(std::string param, std::string message);

// One prompt of a completions request: its text (then `ids` is filled by the caller after
// tokenization) or its token ids.
struct PromptInput {
  std::optional<std::string> text;
  std::vector<int32_t> ids;
};

struct OpenAiLimits {
  int max_n = 32;        // choices per prompt
  int max_prompts = 64;  // prompts in one completions request
  int max_logprobs = SamplingParams::kMaxLogprobs;
  size_t max_stop_strings = 16;
};

struct OpenAiRequest {
  bool chat = false;
  std::string model;  // empty: the served model
  // Completions.
  std::vector<PromptInput> prompts;
  bool echo = false;
  // Chat: messages with their content flattened to strings (text parts joined by "\n");
  // tools (null or an array) and chat_template_kwargs (null or an object) pass to the template.
  nlohmann::ordered_json messages;
  nlohmann::ordered_json tools;
  nlohmann::ordered_json chat_template_kwargs;
  bool add_generation_prompt = true;
  // Both.
  int n = 1;
  bool stream = false;
  bool include_usage = false;
  int max_tokens = 0;       // 0: the server's default (limits.max_tokens_default)
  SamplingParams sampling;  // temperature defaults to 1, as OpenAI's
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool skip_special_tokens = true;
  // vLLM's return_token_ids: each choice (and each streamed chunk) also carries the
  // generated token ids as "token_ids".
  bool return_token_ids = false;
  // Logprobs: -1 = none; else the number of alternatives per token (0 = the sampled token's
  // logprob only). Completions: `logprobs`; chat: `logprobs: true` + `top_logprobs`.
  int logprobs = -1;
  std::string user;
};

// Parses a /v1/completions body (chat = false) or a /v1/chat/completions body (chat = true).
// The error names the field ("prompt", "messages[2].content", "stop[1]", ...).
std::optional<ApiError> ParseOpenAiRequest(const nlohmann::ordered_json& body, bool chat,
                                           const OpenAiLimits& limits, OpenAiRequest* out);

// The request body as JSON: an object, else a 400 saying what it was.
std::optional<ApiError> ParseJsonBody(const std::string& body, nlohmann::ordered_json* out);

}  // namespace engram
