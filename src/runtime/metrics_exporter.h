// MetricsExporter: Prometheus text exposition of engramd's numbers on metrics.listen
// (http://HOST:PORT/metrics), built from snapshots at scrape time (nothing on the hot path):
// the serving metrics users know from vLLM's `vllm:` family under an `engram_` prefix
// (requests running/waiting, prompt/generation tokens, finished by reason, time to first
// token, inter-token latency, end-to-end latency, KV usage) and the Engram row traffic per
// layer (rows requested/unique, bytes, transfer and stall seconds, overlap, issue-to-ready
// latency, estimated throughput loss, row cache hits/misses).
//
// The HTTP side is a minimal HTTP/1.0 server of our own (one thread, poll-based accept,
// bounded request reads): prometheus-cpp's civetweb exposer could not start its threads in a
// process that also loads cuBLAS (civetweb asks for a 100 KB thread stack, smaller than the
// static TLS cuBLAS brings, so pthread_create fails with EINVAL).
//
// Thread safety: scrapes run on the exporter's thread and read thread-safe snapshots.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "runtime/engine_loop.h"

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
  void Serve();
  void Answer(int fd);

  std::unique_ptr<Collector> collector_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace engram
