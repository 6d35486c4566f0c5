#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace engram {
namespace {

// Columns per task: a 128k-vocabulary row is four tasks.
constexpr int64_t kSegment = 32768;
// Below this many values in all, one thread does the whole job (waking others costs more).
constexpr int64_t kSerialValues = 65536;

struct Best {
  float value = 0.f;
  int64_t index = -1;  // -1: the range held only NaNs
};

// The largest non-NaN value of x[begin, end) and its lowest index.
Best ArgmaxRange(const float* x, int64_t begin, int64_t end) {
  Best b;
  int64_t i = begin;
  for (; i < end; ++i) {
    if (!std::isnan(x[i])) {
      b = {x[i], i};
      ++i;
      break;
    }
  }
  for (; i < end; ++i) {
    if (x[i] > b.value) b = {x[i], i};  // strictly greater: an equal later value never wins
  }
  return b;
}

// Combines the segments of one row (in index order) under the row's NaN rule.
int32_t Finish(const float* row, const Best* seg, int64_t segments) {
  if (std::isnan(row[0])) return 0;  // std::max_element never moves past a leading NaN
  Best b = seg[0];
  for (int64_t s = 1; s < segments; ++s) {
    if (seg[s].index >= 0 && (b.index < 0 || seg[s].value > b.value)) b = seg[s];
  }
  return static_cast<int32_t>(b.index);  // >= 0: row[0] is a candidate
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
    ids[r] = Finish(x + r * v, seg.data() + r * segments, segments);
  }
}

}  // namespace engram
