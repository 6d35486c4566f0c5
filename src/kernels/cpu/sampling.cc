#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace engram {
namespace {

// Columns per task: a 128k-vocabulary row is four tasks.
constexpr int64_t kSegment = 32768;
// Below this many values in all, one thread does the whole job (waking others costs more).
constexpr int64_t kSerialValues = 65536;

struct Best {
  float value = -std::numeric_limits<float>::infinity();
  int64_t index = -1;  // -1: the range held no value above -inf
  bool nan = false;    // the range held a NaN
};

// The largest value of x[begin, end) and its lowest index, and whether a NaN was seen.
Best ArgmaxRange(const float* x, int64_t begin, int64_t end) {
  Best b;
  bool nan = false;
  for (int64_t i = begin; i < end; ++i) {
    nan |= x[i] != x[i];
    if (x[i] > b.value) b = {x[i], i, false};  // strictly greater: a later equal never wins
  }
  b.nan = nan;
  return b;
}

// Combines the segments of one row (in index order): -1 for a row with a NaN or no finite max.
int32_t Finish(const Best* seg, int64_t segments) {
  Best b = seg[0];
  bool nan = seg[0].nan;
  for (int64_t s = 1; s < segments; ++s) {
    nan |= seg[s].nan;
    if (seg[s].index >= 0 && (b.index < 0 || seg[s].value > b.value)) b = seg[s];
  }
  if (nan || b.index < 0 || !std::isfinite(b.value)) return -1;
  return static_cast<int32_t>(b.index);
}

}  // namespace

void ArgmaxRowsF32(ThreadPool& pool, const float* x, int64_t rows, int64_t v, int32_t* ids) {
  if (rows <= 0 || v <= 0) return;
  const int64_t segments = (v + kSegment - 1) / kSegment;
  std::vector<Best> seg(static_cast<size_t>(rows * segments));
  auto task = [&](int64_t t, int) {
    const int64_t r = t / segments, s = t % segments;
    const int64_t begin = s * kSegment, end = std::min(v, begin + kSegment);
    seg[static_cast<size_t>(t)] = ArgmaxRange(x + r * v, begin, end);
  };
  if (rows * v < kSerialValues) {
    for (int64_t t = 0; t < rows * segments; ++t) task(t, 0);
  } else {
    pool.ParallelFor(rows * segments, task);
  }
  for (int64_t r = 0; r < rows; ++r) {
    ids[r] = Finish(seg.data() + r * segments, segments);
  }
}

}  // namespace engram
