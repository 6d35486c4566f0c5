// Overlap accounting of Engram row traffic, per Engram layer: how many rows the steps asked
// for, how many were unique, how many bytes moved, how long the transfers took, and how long
// compute waited for them. overlap = 1 - stall / transfer (1: every transfer hidden behind
// compute); estimated loss = stall / step time (the throughput lost to row traffic).
// Thread safety: a plain value; the copy engine guards its copy with a mutex.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace engram {

struct LayerOverlap {
  int layer_id = 0;  // the model layer this Engram layer sits in
  uint64_t steps = 0;
  uint64_t rows_requested = 0;
  uint64_t unique_rows = 0;
  uint64_t hot_hits = 0;     // unique rows served by the device hot-row cache
  uint64_t bytes_moved = 0;  // bytes of rows brought from the host tier (hot hits excluded)
  double transfer_s = 0;     // copy-thread time fetching and staging this layer's rows
  double stall_s = 0;        // compute time spent waiting for them
  // Issue-to-ready latency histogram: upper bounds in microseconds (the last bucket is +inf).
  static constexpr std::array<double, 8> kBucketsUs = {10, 30, 100, 300, 1000, 3000, 10000, 1e300};
  std::array<uint64_t, 8> latency_buckets{};
  double latency_sum_s = 0;

  double hot_hit_rate() const {
    return unique_rows > 0 ? static_cast<double>(hot_hits) / static_cast<double>(unique_rows) : 0;
  }
  double overlap() const { return transfer_s > 0 ? 1.0 - stall_s / transfer_s : 1.0; }
  // One latency is added per step.
  double latency_mean_s() const {
    return steps > 0 ? latency_sum_s / static_cast<double>(steps) : 0;
  }
  void AddLatency(double seconds) {
    latency_sum_s += seconds;
    for (size_t i = 0; i < kBucketsUs.size(); ++i) {
      if (seconds * 1e6 <= kBucketsUs[i]) {
        ++latency_buckets[i];
        return;
      }
    }
  }
};

struct OverlapStats {
  std::vector<LayerOverlap> layers;  // one per Engram layer, in layer_ids order
  double step_s = 0;                 // total engine step time while prefetch ran
  bool prefetch = true;              // false: rows read synchronously at the layer
  double estimated_loss() const {
    double stall = 0;
    for (const LayerOverlap& l : layers) stall += l.stall_s;
    return step_s > 0 ? stall / step_s : 0.0;
  }
};

}  // namespace engram
