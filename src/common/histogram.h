// Histogram: fixed upper bounds (seconds), per-bucket counts, sum and count; the last bucket
// is +inf. A plain value: the owner guards it.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace engram {

struct Histogram {
  std::vector<double> bounds;    // ascending upper bounds; +inf is implied after the last
  std::vector<uint64_t> counts;  // bounds.size() + 1 entries
  double sum = 0;
  uint64_t count = 0;

  explicit Histogram(std::vector<double> b = {})
      : bounds(std::move(b)), counts(bounds.size() + 1) {}
  void Add(double v) {
    size_t i = 0;
    while (i < bounds.size() && v > bounds[i]) ++i;
    ++counts[i];
    sum += v;
    ++count;
  }
};

}  // namespace engram
