#include "kernels/cpu/machine_bounds.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <vector>

#include "kernels/cpu/cpu_memory.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/linear_int8.h"
#include "kernels/cpu/simd_avx2.h"
#include "kernels/cpu/thread_pool.h"

namespace engram {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kRuns = 7;

// Runs body(thread) once on each of the pool's threads at the same time and returns the
// seconds from the first thread's start to the last thread's end (a thread delayed by the
// scheduler lengthens the span rather than hiding its share).
template <typename F>
double TimeOnAllThreads(ThreadPool& pool, F&& body) {
  const int n = pool.num_threads();
  std::atomic<int> arrived{0};
  std::vector<Clock::time_point> start(n), end(n);
  pool.ParallelFor(n, [&](int64_t task, int) {
    // Each task waits for all others to start, so no thread runs two tasks.
    arrived.fetch_add(1, std::memory_order_acq_rel);
    while (arrived.load(std::memory_order_acquire) < n) {
    }
    start[task] = Clock::now();
    body(static_cast<int>(task));
    end[task] = Clock::now();
  });
  const auto first = *std::min_element(start.begin(), start.end());
  const auto last = *std::max_element(end.begin(), end.end());
  return std::chrono::duration<double>(last - first).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

float ReadSumScalar(const float* p, int64_t n) {
  float acc[8] = {};
  for (int64_t i = 0; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  }
  float s = 0.f;
  for (float a : acc) s += a;
  return s;
}

ENGRAM_AVX2 float ReadSumAvx2(const float* p, int64_t n) {
  __m256 a[8];
  for (auto& v : a) v = _mm256_setzero_ps();
  for (int64_t i = 0; i + 64 <= n; i += 64) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) a[j] = _mm256_add_ps(a[j], _mm256_load_ps(p + i + 8 * j));
  }
  for (int j = 1; j < 8; ++j) a[0] = _mm256_add_ps(a[0], a[j]);
  return avx2::HorizontalSum(a[0]);
}

float FmaLoopScalar(int64_t iters) {
  float acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = 1.f + 0.01f * j;
  const float b = 0.999999f, c = 1e-7f;
  for (int64_t i = 0; i < iters; ++i) {
    for (int j = 0; j < 16; ++j) acc[j] = acc[j] * b + c;
  }
  float s = 0.f;
  for (float a : acc) s += a;
  return s;
}

ENGRAM_AVX2 float FmaLoopAvx2(int64_t iters) {
  __m256 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(1.f + 0.01f * j);
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], b, c);
  }
  for (int j = 1; j < 12; ++j) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  return avx2::HorizontalSum(acc[0]);
}

__attribute__((target("avx512f,avx2,fma"))) float FmaLoopAvx512(int64_t iters) {
  __m512 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(1.f + 0.01f * j);
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_fmadd_ps(acc[j], b, c);
  }
  for (int j = 1; j < 12; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  float s = 0.f;
  for (float v : lanes) s += v;
  return s;
}

// 12 independent chains of `iters` FMAs at the ISA's width; returns a value to keep.
float FmaLoop(CpuIsa isa, int64_t iters) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return FmaLoopAvx512(iters);
    case CpuIsa::kAvx2:
      return FmaLoopAvx2(iters);
    default:
      return FmaLoopScalar(iters);
  }
}

double FlopsPerIteration(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return 12 * 16 * 2;
    case CpuIsa::kAvx2:
      return 12 * 8 * 2;
    default:
      return 16 * 2;
  }
}

__attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma"))) int32_t DotLoopVnni(int64_t iters) {
  __m512i acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_epi32(j);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  for (int j = 1; j < 12; ++j) acc[0] = _mm512_add_epi32(acc[0], acc[j]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, acc[0]);
  int32_t s = 0;
  for (int32_t v : lanes) s += v;
  return s;
}

ENGRAM_AVX2 int32_t DotLoopAvx2(int64_t iters) {
  __m256i acc[8];
  for (int j = 0; j < 8; ++j) acc[j] = _mm256_set1_epi32(j);
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < 8; ++j) {
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
    }
  }
  for (int j = 1; j < 8; ++j) acc[0] = _mm256_add_epi32(acc[0], acc[j]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[0]);
  int32_t s = 0;
  for (int32_t v : lanes) s += v;
  return s;
}

}  // namespace

double MeasureInt8Gops(int threads) {
  const Int8Kernel kernel = Int8KernelFor(DefaultCpuIsa());
  if (kernel == Int8Kernel::kScalar) return 0.0;
  ThreadPool pool(std::max(threads, 1));
  const int n = pool.num_threads();
  const bool vnni = kernel == Int8Kernel::kAvx512Vnni;
  const int64_t iters = 20'000'000;
  // Multiply-adds per iteration: 12 vpdpbusd x 64, or 8 maddubs/madd sequences x 32.
  const double ops_per_iter = vnni ? 12 * 64 * 2 : 8 * 32 * 2;
  std::vector<int32_t> sink(n);
  auto loop = [&](int64_t it) { return vnni ? DotLoopVnni(it) : DotLoopAvx2(it); };
  TimeOnAllThreads(pool, [&](int t) { sink[t] += loop(iters / 4); });  // warm-up
  std::vector<double> rates;
  for (int run = 0; run < kRuns; ++run) {
    const double s = TimeOnAllThreads(pool, [&](int t) { sink[t] += loop(iters); });
    rates.push_back(ops_per_iter * static_cast<double>(iters) * n / s / 1e9);
  }
  volatile int32_t keep = sink[0];
  (void)keep;
  return Median(rates);
}

double MeasureMemoryBandwidthGBs(int threads) {
  const int64_t bytes = int64_t{1} << 30;
  const int64_t floats = bytes / 4;
  std::shared_ptr<void> mem = AllocAligned(bytes, /*zero=*/false);
  if (mem == nullptr) return 0.0;
  float* buf = static_cast<float*>(mem.get());
  ThreadPool pool(std::max(threads, 1));
  const int n = pool.num_threads();
  // Touch every page from the thread that will read it.
  const int64_t per = floats / n / 64 * 64;
  TimeOnAllThreads(pool, [&](int t) {
    const int64_t end = t == n - 1 ? floats : (t + 1) * per;
    std::fill(buf + t * per, buf + end, 1.f);
  });
  const CpuIsa isa = DefaultCpuIsa();
  std::vector<float> sink(n);
  std::vector<double> rates;
  for (int run = 0; run < kRuns; ++run) {
    const double s = TimeOnAllThreads(pool, [&](int t) {
      const int64_t len = (t == n - 1 ? floats : (t + 1) * per) - t * per;
      sink[t] +=
          UsesAvx2(isa) ? ReadSumAvx2(buf + t * per, len) : ReadSumScalar(buf + t * per, len);
    });
    rates.push_back(static_cast<double>(bytes) / s / 1e9);
  }
  volatile float keep = sink[0];
  (void)keep;
  return Median(rates);
}

double MeasureFmaGflops(int threads) {
  ThreadPool pool(std::max(threads, 1));
  const int n = pool.num_threads();
  const CpuIsa isa = DefaultCpuIsa();
  const int64_t iters = 20'000'000;
  const double flops_per_iter = FlopsPerIteration(isa);
  std::vector<float> sink(n);
  std::vector<double> rates;
  TimeOnAllThreads(pool, [&](int t) {  // warm-up (clock ramp)
    sink[t] += FmaLoop(isa, iters / 4);
  });
  for (int run = 0; run < kRuns; ++run) {
    const double s = TimeOnAllThreads(pool, [&](int t) { sink[t] += FmaLoop(isa, iters); });
    rates.push_back(flops_per_iter * static_cast<double>(iters) * n / s / 1e9);
  }
  volatile float keep = sink[0];
  (void)keep;
  return Median(rates);
}

}  // namespace engram
