// MetricsExporter: Prometheus text exposition of engramd's numbers on metrics.listen
// (http://HOST:PORT/metrics), built from snapshots at scrape time (nothing on the hot path):
// the serving metrics users know from vLLM's `vllm:` family under an `engram_` prefix
// (requests running/waiting, prompt/generation tokens, finished by reason, time to first
// token, inter-token latency, end-to-end latency, KV usage) and the Engram row traffic per
// layer (rows requested/unique, bytes, transfer and stall seconds, overlap, issue-to-ready
// latency, estimated throughput loss, row cache hits/misses).
//
// Thread safety: scrapes run on the exporter's own threads and read thread-safe snapshots.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "runtime/engine_loop.h"

namespace prometheus {
class Exposer;
}

namespace engram {

class MetricsExporter {
 public:
  // Listens on `listen` ("host:port", port 0 = ephemeral); `loop` must outlive the exporter.
  static Result<std::unique_ptr<MetricsExporter>> Start(const std::string& listen,
                                                        const EngineLoop& loop);
  ~MetricsExporter();
  int port() const { return port_; }

 private:
  class Collector;
  MetricsExporter() = default;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace engram
