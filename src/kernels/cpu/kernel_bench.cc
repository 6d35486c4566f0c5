#include "kernels/cpu/kernel_bench.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "common/dtype.h"
#include "common/fp8.h"
#include "kernels/batch_layout.h"
#include "kernels/cpu/linear_int8.h"
#include "kernels/cpu/machine_bounds.h"
#include "kernels/cpu/thread_pool.h"

namespace engram {
namespace {

using Clock = std::chrono::steady_clock;

// Weights of the bandwidth rows rotate over copies totalling this much, so they stream from
// DRAM rather than the last-level cache.
constexpr int64_t kColdBytes = int64_t{256} << 20;

// Cheap deterministic values in [-1, 1).
float Hash01(uint64_t i) {
  i = (i + 0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
  i ^= i >> 31;
  return static_cast<float>(i >> 40) / static_cast<float>(1 << 23) - 1.f;
}

Tensor RandomHost(DType dtype, std::vector<int64_t> shape, uint64_t seed) {
  Tensor t = HostTensor(dtype, std::move(shape));
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = Hash01(seed * 0x100000001b3ull + static_cast<uint64_t>(i));
    if (dtype == DType::kBF16) {
      t.ptr<uint16_t>()[i] = F32ToBf16(v);
    } else {
      t.ptr<float>()[i] = v;
    }
  }
  return t;
}

struct Row {
  std::string what;
  double us = 0;    // per call
  double rate = 0;  // GB/s or GFLOP/s
  std::string unit;
  double percent = 0;  // of the bound (0 = no bound)
  std::string bound;
};

// Median seconds of `runs` timed calls of body (a Status), after one warm-up call.
template <typename F>
Result<double> MedianSeconds(int runs, F&& body) {
  ENGRAM_RETURN_IF_ERROR(body());  // warm-up
  std::vector<double> s;
  for (int r = 0; r < std::max(runs, 1); ++r) {
    const auto t0 = Clock::now();
    ENGRAM_RETURN_IF_ERROR(body());
    s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(s.begin(), s.end());
  return s[s.size() / 2];
}

// The same with the backend's work finished inside each timed call.
template <typename F>
Result<double> MedianSeconds(Backend& b, int runs, F&& body) {
  return MedianSeconds(runs, [&]() -> Status {
    ENGRAM_RETURN_IF_ERROR(body());
    return b.Synchronize();
  });
}

// Linear with M rows over `copies` distinct weights [n, k]; returns seconds per call.
Result<double> TimeLinear(Backend& b, int64_t m, int64_t n, int64_t k, DType dtype, bool prepare,
                          int copies, int calls_per_run, int runs) {
  std::vector<Tensor> weights;
  for (int c = 0; c < copies; ++c) {
    Tensor host = RandomHost(dtype, {n, k}, 17 + c);
    if (prepare) {
      ENGRAM_ASSIGN_OR_RETURN(Tensor w, b.PrepareWeight(host, WeightUse::kLinear));
      weights.push_back(std::move(w));
    } else {
      weights.push_back(std::move(host));
    }
  }
  Tensor x_host = RandomHost(DType::kF32, {m, k}, 3);
  ENGRAM_ASSIGN_OR_RETURN(Tensor x, b.Alloc(DType::kF32, {m, k}));
  ENGRAM_RETURN_IF_ERROR(b.CopyFromHost(x_host.data, x));
  ENGRAM_ASSIGN_OR_RETURN(Tensor out, b.Alloc(DType::kF32, {m, n}));
  const int calls = std::max(calls_per_run, copies);
  ENGRAM_ASSIGN_OR_RETURN(
      double s, MedianSeconds(b, runs, [&]() -> Status {
        for (int i = 0; i < calls; ++i) {
          ENGRAM_RETURN_IF_ERROR(b.Linear(x, weights[i % copies], nullptr, out));
        }
        return Status::Ok();
      }));
  return s / calls;
}

// The int8 activation quantizer alone on one thread, m x k random rows: the scalar rule or the
// AVX-512 one (same bytes); seconds per call.
Result<double> TimeQuantizeInt8(int64_t m, int64_t k, bool avx512, int runs) {
  const int64_t kb = (k + kInt8Block - 1) / kInt8Block;
  Tensor x = RandomHost(DType::kF32, {m, k}, 11);
  std::vector<int8_t> q(static_cast<size_t>(m * kb * kInt8Block));
  std::vector<float> scales(static_cast<size_t>(m * kb));
  std::vector<int32_t> sums(static_cast<size_t>(m * kb));
  const int calls = 10;
  ENGRAM_ASSIGN_OR_RETURN(double s, MedianSeconds(runs, [&]() -> Status {
                            for (int i = 0; i < calls; ++i) {
                              if (avx512) {
                                linear_int8_internal::QuantizeActivationsInt8Avx512(
                                    x.ptr<float>(), m, k, q.data(), scales.data(), sums.data());
                              } else {
                                QuantizeActivationsInt8(x.ptr<float>(), m, k, q.data(),
                                                        scales.data(), sums.data());
                              }
                            }
                            return Status::Ok();
                          }));
  return s / calls;
}

// PagedAttention over `seqs` sequences whose tokens [ctx - new_tokens, ctx) run this step
// (decode: new_tokens = 1; prefill: new_tokens = ctx), Llama-8B-like heads; seconds per call.
Result<double> TimeAttention(Backend& b, int seqs, int ctx, int new_tokens, int runs) {
  constexpr int kNq = 32, kNkv = 8, kHd = 128, kBlock = 16;
  const int blocks_per_seq = (ctx + kBlock - 1) / kBlock;
  BatchLayout l;
  l.block_size = kBlock;
  l.max_blocks_per_seq = blocks_per_seq;
  l.seq_token_start.push_back(0);
  for (int s = 0; s < seqs; ++s) {
    for (int p = ctx - new_tokens; p < ctx; ++p) {
      const int block = s * blocks_per_seq + p / kBlock;
      l.token_ids.push_back(0);
      l.positions.push_back(p);
      l.seq_of_token.push_back(s);
      l.slot_mapping.push_back(block * kBlock + p % kBlock);
    }
    l.seq_token_start.push_back(l.num_tokens());
    l.context_lens.push_back(ctx);
    l.state_slots.push_back(s);
    for (int i = 0; i < blocks_per_seq; ++i) l.block_tables.push_back(s * blocks_per_seq + i);
  }
  ENGRAM_RETURN_IF_ERROR(b.UploadLayout(l));
  const int64_t T = l.num_tokens();
  const std::vector<int64_t> cache_shape = {int64_t{seqs} * blocks_per_seq, kBlock, kNkv, kHd};
  ENGRAM_ASSIGN_OR_RETURN(Tensor k_cache, b.AllocZeros(b.kv_dtype(), cache_shape));
  ENGRAM_ASSIGN_OR_RETURN(Tensor v_cache, b.AllocZeros(b.kv_dtype(), cache_shape));
  Tensor qkv_host = RandomHost(DType::kF32, {T, (kNq + 2 * kNkv) * kHd}, 5);
  ENGRAM_ASSIGN_OR_RETURN(Tensor qkv, b.Alloc(DType::kF32, qkv_host.shape));
  ENGRAM_RETURN_IF_ERROR(b.CopyFromHost(qkv_host.data, qkv));
  ENGRAM_ASSIGN_OR_RETURN(Tensor out, b.Alloc(DType::kF32, {T, kNq * kHd}));
  AttentionParams p;
  p.num_q_heads = kNq;
  p.num_kv_heads = kNkv;
  p.head_dim = kHd;
  p.scale = 0.08838834764f;
  const int calls = new_tokens == 1 ? 20 : 1;
  ENGRAM_ASSIGN_OR_RETURN(
      double s, MedianSeconds(b, runs, [&]() -> Status {
        for (int i = 0; i < calls; ++i) {
          ENGRAM_RETURN_IF_ERROR(b.PagedAttention(qkv, k_cache, v_cache, l, p, out));
        }
        return Status::Ok();
      }));
  return s / calls;
}

// GatherRows of `n` random rows of Dh values from a table of `table_rows` rows, stored as
// `dtype` (kBF16) or packed FP8 (kF8E4M3: U8 rows of Fp8RowBytes(Dh)); seconds per call.
Result<double> TimeGather(Backend& b, DType dtype, int64_t table_rows, int64_t dh, int64_t n,
                          int runs) {
  const bool fp8 = dtype == DType::kF8E4M3;
  const int64_t cols = fp8 ? static_cast<int64_t>(Fp8RowBytes(dh)) : dh;
  Tensor host = HostTensor(fp8 ? DType::kU8 : DType::kBF16, {table_rows, cols});
  if (fp8) {
    // Random finite codes (no NaN), scales around 1: the decode's cost does not depend on them.
    uint8_t* p = host.ptr<uint8_t>();
    for (int64_t r = 0; r < table_rows; ++r) {
      uint8_t* row = p + r * cols;
      for (int64_t i = 0; i < dh; ++i) {
        const int c = static_cast<int>((Hash01(static_cast<uint64_t>(r * cols + i)) + 1.f) * 128.f);
        row[i] = static_cast<uint8_t>((c & 0x7f) == 0x7f ? 0x7e : c & 0xff);
      }
      for (int64_t i = dh; i < cols; ++i) row[i] = static_cast<uint8_t>(120 + (r + i) % 8);
    }
  } else {
    host = RandomHost(DType::kBF16, {table_rows, cols}, 23);
  }
  ENGRAM_ASSIGN_OR_RETURN(Tensor table, b.PrepareWeight(host, WeightUse::kEmbedding));
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    idx[static_cast<size_t>(i)] =
        static_cast<int64_t>((Hash01(7777 + static_cast<uint64_t>(i)) + 1.f) / 2 *
                             static_cast<float>(table_rows)) %
        table_rows;
  }
  ENGRAM_ASSIGN_OR_RETURN(Tensor rows, b.Alloc(DType::kI64, {n, 1}));
  ENGRAM_RETURN_IF_ERROR(b.CopyFromHost(idx.data(), rows));
  ENGRAM_ASSIGN_OR_RETURN(Tensor out, b.Alloc(DType::kF32, {n, dh}));
  const int calls = 10;
  ENGRAM_ASSIGN_OR_RETURN(double s, MedianSeconds(b, runs, [&]() -> Status {
                            for (int i = 0; i < calls; ++i) {
                              ENGRAM_RETURN_IF_ERROR(b.GatherRows(table, rows, out));
                            }
                            return Status::Ok();
                          }));
  return s / calls;
}

}  // namespace

std::string RunKernelBench(Backend& backend, const KernelBenchOptions& options) {
  const int threads = options.threads > 0 ? options.threads : PhysicalCoreCount();
  const int runs = options.runs;
  std::string text =
      fmt::format("kernel bench on backend {} (median of {} runs)\n", backend.name(), runs);
  double bw = 0, fma = 0, int8_peak = 0;
  if (options.machine_bounds) {
    const double bw1 = MeasureMemoryBandwidthGBs(1);
    bw = threads == 1 ? bw1 : MeasureMemoryBandwidthGBs(threads);
    const double fma1 = MeasureFmaGflops(1);
    fma = threads == 1 ? fma1 : MeasureFmaGflops(threads);
    text +=
        fmt::format("  memory read bandwidth: {:.1f} GB/s (1 thread), {:.1f} GB/s ({} threads)\n",
                    bw1, bw, threads);
    text += fmt::format("  FMA peak: {:.1f} GFLOP/s (1 thread), {:.1f} GFLOP/s ({} threads)\n",
                        fma1, fma, threads);
    if (options.int8_backend != nullptr) {
      int8_peak = MeasureInt8Gops(threads);
      text += fmt::format("  int8 dot-product peak: {:.1f} GOP/s ({} threads, {} kernels)\n",
                          int8_peak, threads, Int8KernelName(Int8KernelFor(DefaultCpuIsa())));
    }
  }
  std::vector<Row> rows;
  std::string errors;
  // `int8`: on options.int8_backend, whose PrepareWeight quantizes the weight (its bytes are
  // the int8 format's, 1.125 per weight; the rate bound is the int8 peak).
  auto gemv = [&](int64_t m, int64_t n, int64_t k, DType dtype, bool prepare, bool cold,
                  bool int8 = false) {
    const int64_t bytes = int8 ? static_cast<int64_t>(Int8LinearBytes(n, k))
                               : n * k * static_cast<int64_t>(DTypeSize(dtype));
    const int copies = cold ? static_cast<int>(std::max<int64_t>(1, kColdBytes / bytes)) : 1;
    auto s = TimeLinear(int8 ? *options.int8_backend : backend, m, n, k, dtype, prepare, copies,
                        cold ? copies : 64, runs);
    const std::string what =
        fmt::format("GEMV {} {} M={} N={} K={} ({})", int8 ? "int8" : DTypeName(dtype),
                    prepare ? "packed" : "row-major", m, n, k, cold ? "DRAM" : "cache-hot");
    if (!s.ok()) {
      errors += fmt::format("  {}: {}\n", what, s.status().ToString());
      return;
    }
    const double rate = static_cast<double>(bytes) / *s / 1e9;
    rows.push_back({what, *s * 1e6, rate, "GB/s", bw > 0 ? 100 * rate / bw : 0, "bandwidth"});
  };
  auto gemm = [&](int64_t m, int64_t n, int64_t k, DType dtype, bool prepare, bool int8 = false) {
    auto s =
        TimeLinear(int8 ? *options.int8_backend : backend, m, n, k, dtype, prepare, 1, 3, runs);
    const std::string what =
        fmt::format("GEMM {} {} M={} N={} K={}", int8 ? "int8" : DTypeName(dtype),
                    prepare ? "packed" : "row-major", m, n, k);
    if (!s.ok()) {
      errors += fmt::format("  {}: {}\n", what, s.status().ToString());
      return;
    }
    const double rate = 2.0 * m * n * k / *s / 1e9;
    if (int8) {
      rows.push_back(
          {what, *s * 1e6, rate, "GOP/s", int8_peak > 0 ? 100 * rate / int8_peak : 0, "int8 peak"});
    } else {
      rows.push_back({what, *s * 1e6, rate, "GFLOP/s", fma > 0 ? 100 * rate / fma : 0, "FMA peak"});
    }
  };
  const bool row_major = options.row_major && backend.device() == Device::kCpu;
  if (options.linear_attention) {
    gemv(1, 2816, 1024, DType::kBF16, true, /*cold=*/true);
    gemv(1, 2816, 1024, DType::kBF16, true, /*cold=*/false);
    gemv(1, 32000, 1024, DType::kBF16, true, /*cold=*/true);
    gemv(1, 2816, 1024, DType::kF32, true, /*cold=*/true);
    gemv(4, 2816, 1024, DType::kBF16, true, /*cold=*/true);
    if (row_major) gemv(1, 2816, 1024, DType::kBF16, false, /*cold=*/true);
    gemm(128, 2816, 1024, DType::kBF16, true);
    gemm(128, 2816, 1024, DType::kF32, true);
    gemm(512, 2816, 1024, DType::kBF16, true);
    if (row_major) {
      gemm(128, 2816, 1024, DType::kBF16, false);
      gemm(128, 2816, 1024, DType::kF32, false);
    }
    // Attention, 32 q / 8 kv heads of 128, F32 cache: decode streams K and V of every context
    // position once (bandwidth), prefill is 4 * heads * hd * T(T+1)/2 flops (QK and PV).
    for (auto [seqs, ctx] : {std::pair{1, 2048}, std::pair{8, 2048}}) {
      auto s = TimeAttention(backend, seqs, ctx, 1, runs);
      const std::string what = fmt::format("attention decode {} seq x ctx {}", seqs, ctx);
      if (!s.ok()) {
        errors += fmt::format("  {}: {}\n", what, s.status().ToString());
        continue;
      }
      const double bytes = 2.0 * seqs * ctx * 8 * 128 * DTypeSize(backend.kv_dtype());
      const double rate = bytes / *s / 1e9;
      rows.push_back({what, *s * 1e6, rate, "GB/s", bw > 0 ? 100 * rate / bw : 0, "bandwidth"});
    }
    {
      const int T = 512;
      auto s = TimeAttention(backend, 1, T, T, runs);
      const std::string what = fmt::format("attention prefill 1 seq x {} tokens", T);
      if (s.ok()) {
        const double rate = 4.0 * 32 * 128 * (T * (T + 1) / 2.0) / *s / 1e9;
        rows.push_back(
            {what, *s * 1e6, rate, "GFLOP/s", fma > 0 ? 100 * rate / fma : 0, "FMA peak"});
      } else {
        errors += fmt::format("  {}: {}\n", what, s.status().ToString());
      }
    }
  }
  if (options.int8_backend != nullptr) {
    // int8 Linear (quantizer + tiles + threads, as a forward runs it): decode GEMVs stream the
    // int8 format's bytes; prefill GEMMs at M = 256 on `small`'s gate_up and down shapes.
    gemv(1, 2816, 1024, DType::kBF16, true, /*cold=*/true, /*int8=*/true);
    gemv(1, 2816, 1024, DType::kBF16, true, /*cold=*/false, /*int8=*/true);
    gemv(1, 32000, 1024, DType::kBF16, true, /*cold=*/true, /*int8=*/true);  // one long stream
    gemv(16, 2816, 1024, DType::kBF16, true, /*cold=*/true, /*int8=*/true);
    gemm(256, 5632, 1024, DType::kBF16, true, /*int8=*/true);
    gemm(256, 1024, 2816, DType::kBF16, true, /*int8=*/true);
    // The activation quantizer alone (part of every int8 Linear); rate: F32 input read.
    for (int64_t k : {int64_t{1024}, int64_t{2816}}) {
      for (bool avx512 : {false, true}) {
        if (avx512 && !CpuHasAvx512Vnni()) continue;
        const auto s = TimeQuantizeInt8(256, k, avx512, runs);
        const std::string what = fmt::format("quantize activations int8 M=256 K={} ({}, 1 thread)",
                                             k, avx512 ? "AVX-512" : "scalar");
        if (!s.ok()) {
          errors += fmt::format("  {}: {}\n", what, s.status().ToString());
          continue;
        }
        rows.push_back({what, *s * 1e6, 256.0 * k * 4 / *s / 1e9, "GB/s", 0, ""});
      }
    }
  }
  if (options.gathers) {
    // Engram row gathers, Dh = 256 (a DeepSeek table row), 8192 random rows a call (a prefill
    // chunk's T x H): from a table larger than the last-level cache (DRAM) and from a small
    // one (cache-hot: the cost of the widening itself). Rate: table bytes read (FP8: codes and
    // scales).
    constexpr int64_t kDh = 256, kRows = 8192;
    for (DType dtype : {DType::kF8E4M3, DType::kBF16}) {
      const int64_t row_bytes =
          dtype == DType::kF8E4M3 ? static_cast<int64_t>(Fp8RowBytes(kDh)) : kDh * 2;
      for (bool cold : {true, false}) {
        const int64_t table_rows = cold ? kColdBytes / row_bytes : 1024;
        auto s = TimeGather(backend, dtype, table_rows, kDh, kRows, runs);
        const std::string what = fmt::format("GatherRows {} Dh={} {} rows ({})",
                                             dtype == DType::kF8E4M3 ? "FP8 packed" : "BF16", kDh,
                                             kRows, cold ? "DRAM" : "cache-hot");
        if (!s.ok()) {
          errors += fmt::format("  {}: {}\n", what, s.status().ToString());
          continue;
        }
        const double rate = static_cast<double>(kRows * row_bytes) / *s / 1e9;
        rows.push_back(
            {what, *s * 1e6, rate, "GB/s", cold && bw > 0 ? 100 * rate / bw : 0, "bandwidth"});
      }
    }
  }
  text += fmt::format("  {:<60} {:>10} {:>12} {:>8}\n", "kernel", "us/call", "rate", "% bound");
  for (const Row& r : rows) {
    const std::string percent =
        r.percent > 0 ? fmt::format("{:>5.1f}% {}", r.percent, r.bound) : std::string("     -");
    text += fmt::format("  {:<60} {:>10.1f} {:>7.1f} {:<7} {}\n", r.what, r.us, r.rate, r.unit,
                        percent);
  }
  return text + errors;
}

}  // namespace engram
