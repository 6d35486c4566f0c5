// MetricsExporter: Prometheus text exposition of engramd's numbers on metrics.listen
// (http://HOST:PORT/metrics), built from snapshots at scrape time (nothing on the hot path):
// the serving metrics users know from vLLM's `vllm:` family under an `engram_` prefix
// (requests running/waiting, prompt/generation tokens, finished by reason, time to first
// token, inter-token latency, end-to-end latency, KV usage) and the Engram row traffic per
// layer (rows requested/unique, bytes, transfer and stall seconds, overlap, issue-to-ready
// latency, estimated throughput loss, row cache hits/misses).
//
// The HTTP side is an HttpServer (libmicrohttpd: one event-driven thread, so a slow or idle
// client never delays a scrape; bounded connections, request size and idle time; no SIGPIPE).
// Routes: exactly /metrics (any query string), GET or HEAD -> 200 text/plain; version=0.0.4;
// another method on /metrics -> 405 (Allow: GET, HEAD); any other path -> 404.
// Not prometheus-cpp's civetweb exposer: civetweb asks for a 100 KB thread stack, smaller than
// the static TLS cuBLAS brings, so its pthread_create fails with EINVAL in a process that loads
// cuBLAS; the HttpServer's thread has the default stack.
//
// Thread safety: scrapes run on the server's thread and read thread-safe snapshots.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "runtime/engine_loop.h"

namespace engram {

class HttpServer;

inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

class MetricsExporter {
 public:
  // Listens on `listen` ("host:port", "[v6]:port", port 0 = ephemeral); `loop` must outlive
  // the exporter. INVALID_ARGUMENT for a malformed address, UNAVAILABLE if it cannot bind.
  static Result<std::unique_ptr<MetricsExporter>> Start(const std::string& listen,
                                                        const EngineLoop& loop);
  ~MetricsExporter();
  int port() const { return port_; }
  // The Prometheus text exposition of `loop`'s metrics, as served on /metrics (thread-safe;
  // the HTTP front door's /metrics uses it too).
  static std::string Render(const EngineLoop& loop);

 private:
  class Collector;
  MetricsExporter() = default;

  std::unique_ptr<Collector> collector_;
  std::unique_ptr<HttpServer> server_;  // stopped first (declared last): it calls collector_
  int port_ = 0;
};

}  // namespace engram
