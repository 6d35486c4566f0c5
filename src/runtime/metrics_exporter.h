// MetricsExporter: Prometheus text exposition of engramd's numbers on metrics.listen
// (http://HOST:PORT/metrics), built from snapshots at scrape time (nothing on the hot path).
// The serving metrics are vLLM's (its V1 engine's PrometheusStatLogger) under an engram_ prefix
// instead of vllm:, with vLLM's types, histogram bounds (runtime/metrics_buckets.h) and labels
// model_name (EngineLoop::model_name) and engine="0", so a vLLM dashboard, recording rule or
// router works after renaming vllm: to engram_; the Gateway API Inference Extension reads
// engram_num_requests_waiting, engram_num_requests_running and engram_kv_cache_usage_perc.
// The Engram row traffic per layer and tier (rows requested/unique, bytes, transfer and stall
// seconds, overlap, issue-to-ready latency, estimated throughput loss, row cache hits/misses)
// is engramd's own. docs/operations.md lists every metric.
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

// The derived numbers /metrics and the status page (runtime/status_page.h) both report, so the
// two never disagree. engram_kv_cache_usage_perc: reserved KV blocks / all blocks, 0..1.
inline double KvCacheUsage(const ServingStats& s) {
  if (s.kv_blocks_total <= 0) return 0.0;
  const double u = static_cast<double>(s.kv_blocks_reserved) / s.kv_blocks_total;
  return u < 0 ? 0.0 : u > 1 ? 1.0 : u;
}
// engram_estimated_layer_loss: this layer's stall time / the step time (the layers sum to
// OverlapStats::estimated_loss()).
inline double EstimatedLayerLoss(const OverlapStats& o, const LayerOverlap& l) {
  return o.step_s > 0 ? l.stall_s / o.step_s : 0.0;
}

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
