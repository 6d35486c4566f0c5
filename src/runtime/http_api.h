// HttpApi: engramd's OpenAI-compatible HTTP front door, the routes behind an HttpServer in
// thread-per-connection mode (docs/api.md, "HTTP API"):
//   POST /v1/completions, POST /v1/chat/completions   (JSON, or server-sent events when
//                                                      "stream": true), GET /v1/models,
//   POST /tokenize, POST /detokenize                  (vLLM's shapes), GET /version,
//   GET /health (no key needed), GET /metrics (no key unless metrics_require_auth),
//   GET / and GET /status.json (the status page, runtime/status_page.h; as /metrics).
// Requests go to the same EngineLoop as gRPC's. A client that disconnects cancels its
// requests at once (their KV blocks and Engram state are freed at the loop's next iteration);
// a full queue answers 503 with Retry-After; errors are OpenAI's error body naming the field.
//
// Thread safety: Handle runs concurrently on the server's connection threads; SetLoop and
// BeginDrain may be called from any thread at any time.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "runtime/engine_loop.h"
#include "runtime/http_server.h"
#include "runtime/openai_protocol.h"
#include "text/tokenizer.h"

namespace engram {

// Renders chat messages to the prompt text (the model's chat template: ChatTemplate::Render).
using ChatRenderer = std::function<Result<std::string>(
    const nlohmann::ordered_json& messages, bool add_generation_prompt,
    const nlohmann::ordered_json& tools, const nlohmann::ordered_json& chat_template_kwargs)>;

struct HttpApiOptions {
  std::string model_name;  // the id /v1/models lists and requests may name
  // Completions' text prompts are encoded with special tokens (BOS where the tokenizer says);
  // chat prompts never are (templates write bos_token themselves).
  bool add_special_tokens = true;
  OpenAiLimits limits;
  // `authorization` header value -> allowed. Null: every request is allowed.
  std::function<bool(std::string_view)> authorize;
  bool metrics_require_auth = false;
  // With TLS and a client CA: requests must come with a verified client certificate.
  bool require_client_cert = false;
  // The Prometheus exposition for GET /metrics; null: the loop's (MetricsExporter::Render).
  std::function<std::string()> metrics;
  std::string metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";
};

class HttpApi {
 public:
  explicit HttpApi(HttpApiOptions options);
  ~HttpApi();

  // Publishes the loaded model (until then /health and the model routes answer 503). `loop`
  // must outlive every request; `tokenizer` may be null, `render_chat` empty (no template).
  void SetLoop(EngineLoop* loop, std::shared_ptr<const Tokenizer> tokenizer,
               ChatRenderer render_chat);
  // /health answers 503 from now on (the loop refuses new requests by itself).
  void BeginDrain() { draining_.store(true, std::memory_order_relaxed); }

  // The HttpServer handler.
  HttpResponse Handle(const HttpRequest& request);

 private:
  struct Served;  // what SetLoop published
  class Generation;
  class EventStream;

  HttpResponse Completions(const HttpRequest& request, bool chat,
                           const std::shared_ptr<const Served>& served);
  HttpResponse Tokenize(const HttpRequest& request, const Served& s);
  HttpResponse Detokenize(const HttpRequest& request, const Served& s);
  HttpResponse Models(const Served& s) const;
  std::string NextId(const char* prefix);

  HttpApiOptions options_;
  std::atomic<bool> draining_{false};
  std::shared_ptr<const Served> served_;  // atomic_load/atomic_store
  std::atomic<uint64_t> next_id_{1};
  uint64_t id_salt_ = 0;
};

// A Status from the engine as an OpenAI error: INVALID_ARGUMENT, OUT_OF_RANGE and
// FAILED_PRECONDITION -> 400, NOT_FOUND -> 404, RESOURCE_EXHAUSTED and UNAVAILABLE -> 503,
// DEADLINE_EXCEEDED -> 504, anything else -> 500.
ApiError ToApiError(const Status& st);

}  // namespace engram
