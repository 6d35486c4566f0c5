// CudaBackend's int8 Linear weights (int8_linear.h): which parts qualify, their upload as
// Layout::kInt8Rows32 (int8 files' codes as stored; float weights quantized on the device with
// the CPU's rounding), the check of the first one, and Linear on them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "common/int8_block.h"
#include "common/logging.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/int8_linear.h"

namespace engram::cuda {
namespace {

// Relative Frobenius error bars of the first int8 weight against float64 products of its
// device codes and scales: the GEMV path sums exact int32 block dot products in F32 (error
// ~1e-6); the prefill path rounds the dequantized weight and the activations to BF16 (~4e-3).
constexpr double kInt8GemvCheckTol = 1e-4;
constexpr double kInt8GemmCheckTol = 2e-2;
constexpr int64_t kInt8CheckCols = 256;  // output columns the check samples
// Largest BF16 chunk (elements) of a weight dequantized for one prefill GEMM, and of the F32
// rows quantized at load.
constexpr int64_t kInt8ChunkElems = int64_t{8} << 20;

size_t RoundUp256(size_t v) { return (v + 255) / 256 * 256; }

bool IsInt8File(const LinearSource& p) {
  return p.quantized() && p.w.dtype == DType::kI8 && p.block_n == 1 &&
         p.block_k == kInt8GemmBlock && p.w.shape.size() == 2;
}

// The activations' scratch for M rows of K: codes [M, Int8Padded(K)], then F32 scales.
size_t ActScaleOffset(int64_t m, int64_t k) {
  return RoundUp256(static_cast<size_t>(m) * static_cast<size_t>(Int8Padded(k)));
}

}  // namespace

Result<Tensor> CudaBackend::AllocInt8Linear(int64_t n, int64_t k) {
  ENGRAM_RETURN_IF_ERROR(NotCapturing("PrepareLinear"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  void* p = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, Int8RowsBytes(n, k)));
  Tensor t;
  t.owner = std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
  t.data = p;
  t.dtype = DType::kU8;
  t.device = Device::kCuda;
  t.layout = Layout::kInt8Rows32;
  t.shape = {n, k};
  return t;
}

Result<Tensor> CudaBackend::UploadInt8Linear(const std::vector<LinearSource>& parts) {
  const int64_t K = parts[0].w.dim(1), kp = Int8Padded(K), kb = Int8Blocks(K);
  int64_t N = 0;
  for (const LinearSource& p : parts) {
    if (p.w.dim(1) != K) {
      return InvalidArgument("{}: Linear weight {} has K = {}, the other parts {}", p.name,
                             p.w.ShapeString(), p.w.dim(1), K);
    }
    if (p.scale_inv.shape != std::vector<int64_t>{p.w.dim(0), kb} ||
        (p.scale_inv.dtype != DType::kF32 && p.scale_inv.dtype != DType::kBF16)) {
      return InvalidArgument("{}: scale_inv is {} {}, expected F32 or BF16 [{}, {}]", p.name,
                             DTypeName(p.scale_inv.dtype), p.scale_inv.ShapeString(), p.w.dim(0),
                             kb);
    }
    N += p.w.dim(0);
  }
  std::vector<uint8_t> host(Int8RowsBytes(N, K), 0);
  auto* scales = reinterpret_cast<float*>(host.data() + Int8RowsScaleOffset(N, K));
  int64_t row = 0;
  for (const LinearSource& p : parts) {
    const int64_t n = p.w.dim(0);
    const auto* codes = p.w.ptr<uint8_t>();
    for (int64_t r = 0; r < n; ++r) {
      const uint8_t* src = codes + r * K;
      if (const uint8_t* bad = std::find(src, src + K, uint8_t{0x80}); bad != src + K) {
        return InvalidArgument("{}: code -128 at [{}, {}] (int8 codes are in [-127, 127])", p.name,
                               r, bad - src);
      }
      std::memcpy(host.data() + (row + r) * kp, src, static_cast<size_t>(K));
    }
    ConvertToF32(p.scale_inv.dtype, p.scale_inv.data, scales + row * kb,
                 static_cast<size_t>(n * kb));
    row += n;
  }
  ENGRAM_ASSIGN_OR_RETURN(Tensor t, AllocInt8Linear(N, K));
  ENGRAM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(t.data, host.data(), host.size(), cudaMemcpyHostToDevice, stream()));
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));  // `host` dies here
  return t;
}

Result<Tensor> CudaBackend::QuantizeInt8Linear(const Tensor& host) {
  constexpr const char* kOp = "PrepareLinear (int8)";
  ENGRAM_ASSIGN_OR_RETURN(Elem src, ToElem(host.dtype, kOp, "weight"));
  if (host.shape.size() != 2 || host.layout != Layout::kRowMajor) {
    return InvalidArgument("{}: a Linear weight must be row-major [N, K], got {}", kOp,
                           host.ShapeString());
  }
  const int64_t N = host.dim(0), K = host.dim(1), kp = Int8Padded(K);
  ENGRAM_ASSIGN_OR_RETURN(Tensor t, AllocInt8Linear(N, K));
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(t.data, 0, Int8RowsBytes(N, K), stream()));
  auto* codes = static_cast<int8_t*>(t.data);
  auto* scales = reinterpret_cast<float*>(static_cast<char*>(t.data) + Int8RowsScaleOffset(N, K));
  const size_t esize = DTypeSize(host.dtype);
  const int64_t rows = std::min<int64_t>(N, std::max<int64_t>(1, kInt8ChunkElems / K));
  const size_t chunk = static_cast<size_t>(rows * K);
  ENGRAM_ASSIGN_OR_RETURN(void* staging, GetScratch(linear_scratch_, chunk * esize, kOp));
  float* f32 = static_cast<float*>(staging);
  if (src != Elem::kF32) {
    ENGRAM_ASSIGN_OR_RETURN(void* s, GetScratch(int8_scratch_, chunk * sizeof(float), kOp));
    f32 = static_cast<float*>(s);
  }
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t r = std::min(rows, N - r0);
    const size_t cnt = static_cast<size_t>(r * K);
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        staging, static_cast<const char*>(host.data) + static_cast<size_t>(r0 * K) * esize,
        cnt * esize, cudaMemcpyDefault, stream()));
    if (src != Elem::kF32) {
      ENGRAM_RETURN_IF_ERROR(LaunchStatus(
          LaunchConvert(staging, src, f32, Elem::kF32, static_cast<int64_t>(cnt), stream()), kOp));
    }
    ENGRAM_RETURN_IF_ERROR(
        LaunchStatus(LaunchQuantizeInt8Rows(f32, r, K, codes + r0 * kp, kp,
                                            scales + r0 * Int8Blocks(K), stream()),
                     kOp));
  }
  // The caller may release the host weight once this returns.
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));
  return t;
}

Result<std::string> CudaBackend::CheckInt8Linear(const std::vector<LinearSource>& parts,
                                                 const Tensor& host, const Tensor& w) {
  const int64_t N = w.dim(0), K = w.dim(1), kp = Int8Padded(K), kb = Int8Blocks(K);
  // The sampled rows' codes and scales, copied back: row i of `codes` / `scales` is weight row
  // cols[i].
  std::vector<int64_t> cols;
  const int64_t nc = std::min(N, kInt8CheckCols);
  for (int64_t i = 0; i < nc; ++i) cols.push_back(i * N / nc);
  std::vector<int8_t> codes(static_cast<size_t>(nc * kp));
  std::vector<float> scales(static_cast<size_t>(nc * kb));
  const char* base = static_cast<const char*>(w.data);
  for (int64_t i = 0; i < nc; ++i) {
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(codes.data() + i * kp, base + cols[i] * kp,
                                                static_cast<size_t>(kp), cudaMemcpyDeviceToHost,
                                                stream()));
    ENGRAM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(scales.data() + i * kb, base + Int8RowsScaleOffset(N, K) + cols[i] * kb * 4,
                        static_cast<size_t>(kb) * 4, cudaMemcpyDeviceToHost, stream()));
  }
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));
  // Float weights: the device's codes and scales are common/int8_block.h's, bit for bit.
  if (!host.empty()) {
    std::vector<float> row(static_cast<size_t>(K));
    int8_t q[kInt8GemmBlock];
    for (int64_t i = 0; i < nc; ++i) {
      ConvertToF32(host.dtype, host.ptr<char>() + cols[i] * K * DTypeSize(host.dtype), row.data(),
                   row.size());
      for (int64_t b = 0; b < kb; ++b) {
        const int64_t c0 = b * kInt8GemmBlock;
        const int len = static_cast<int>(std::min<int64_t>(kInt8GemmBlock, K - c0));
        const float s = QuantizeInt8Block(row.data() + c0, len, q);
        if (s != scales[i * kb + b] ||
            std::memcmp(q, codes.data() + i * kp + c0, static_cast<size_t>(len)) != 0) {
          return fmt::format("{}: the device quantized row {} block {} unlike common/int8_block.h",
                             parts[0].name, cols[i], b);
        }
      }
    }
  }
  // Int8 files: the device's codes and scales are the parts' as stored (stacked along N).
  if (host.empty()) {
    for (int64_t i = 0; i < nc; ++i) {
      int64_t r = cols[i];
      size_t pi = 0;
      while (r >= parts[pi].w.dim(0)) r -= parts[pi++].w.dim(0);
      const LinearSource& p = parts[pi];
      std::vector<float> ps(static_cast<size_t>(kb));
      ConvertToF32(p.scale_inv.dtype,
                   p.scale_inv.ptr<char>() + r * kb * DTypeSize(p.scale_inv.dtype), ps.data(),
                   ps.size());
      if (std::memcmp(codes.data() + i * kp, p.w.ptr<char>() + r * K, static_cast<size_t>(K)) !=
              0 ||
          std::memcmp(scales.data() + i * kb, ps.data(), ps.size() * sizeof(float)) != 0) {
        return fmt::format("{}: the device row {} differs from the file's row {}", p.name, cols[i],
                           r);
      }
    }
  }
  // Both Linear paths against float64 of the device weight (and, for the GEMV, of the
  // activations quantized by the same rule).
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int64_t M : {int64_t{1}, kInt8GemvMaxRows, kInt8GemvMaxRows + 1}) {
    std::vector<float> x(static_cast<size_t>(M * K));
    for (float& v : x) v = nd(rng);
    ENGRAM_ASSIGN_OR_RETURN(Tensor xd, Alloc(DType::kF32, {M, K}));
    ENGRAM_ASSIGN_OR_RETURN(Tensor od, Alloc(DType::kF32, {M, N}));
    ENGRAM_RETURN_IF_ERROR(CopyFromHost(x.data(), xd));
    ENGRAM_RETURN_IF_ERROR(LinearInt8(xd, w, od));
    std::vector<float> out(static_cast<size_t>(M * N));
    ENGRAM_RETURN_IF_ERROR(CopyToHost(od, out.data()));
    const bool gemv = M <= kInt8GemvMaxRows;
    std::vector<double> xr(x.begin(), x.end());
    if (gemv) {
      int8_t q[kInt8GemmBlock];
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t b = 0; b < kb; ++b) {
          const int64_t c0 = b * kInt8GemmBlock;
          const int len = static_cast<int>(std::min<int64_t>(kInt8GemmBlock, K - c0));
          const float s = QuantizeInt8Block(x.data() + m * K + c0, len, q);
          for (int i = 0; i < len; ++i) xr[m * K + c0 + i] = static_cast<double>(q[i]) * s;
        }
      }
    }
    double num = 0, den = 0;
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t i = 0; i < nc; ++i) {
        double ref = 0;
        for (int64_t c = 0; c < K; ++c) {
          ref += xr[m * K + c] * codes[i * kp + c] * double{scales[i * kb + c / kInt8GemmBlock]};
        }
        const double d = out[m * N + cols[i]] - ref;
        num += d * d;
        den += ref * ref;
      }
    }
    const double err = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
    const double tol = gemv ? kInt8GemvCheckTol : kInt8GemmCheckTol;
    if (!(err <= tol)) {
      return fmt::format("{}: the int8 {} is {:.3g} (relative) from the float64 product, over {}",
                         parts[0].name, gemv ? "GEMV" : "GEMM", err, tol);
    }
    spdlog::info("CUDA backend: {} as an int8 {} ({} rows) is {:.2e} (relative) from float64",
                 parts[0].name, gemv ? "dp4a GEMV" : "dequantized BF16 GEMM", M, err);
  }
  return std::string();
}

Result<Tensor> CudaBackend::PrepareInt8Linear(const std::vector<LinearSource>& parts, bool* used) {
  *used = false;
  bool files = !parts.empty();
  for (const LinearSource& p : parts) files = files && IsInt8File(p);
  if (int8_state_ < 0 || !((files && weights_ != "bf16") || weights_ == "int8")) return Tensor{};
  int64_t n = 0;
  for (const LinearSource& p : parts) n += p.w.shape.size() == 2 ? p.w.dim(0) : 0;
  if (n == 0 || parts[0].w.shape.size() != 2 || parts[0].w.dim(1) == 0) {
    return Tensor{};  // empty: the generic path
  }
  Tensor host;  // the float weights quantized here (empty for int8 files)
  Tensor t;
  if (files) {
    ENGRAM_ASSIGN_OR_RETURN(t, UploadInt8Linear(parts));
  } else {
    ENGRAM_ASSIGN_OR_RETURN(host, StackLinearSources(parts, DType::kF32));
    ENGRAM_ASSIGN_OR_RETURN(t, QuantizeInt8Linear(host));
  }
  if (int8_state_ == 0) {
    // A CUDA error is returned; a wrong result turns the path off.
    ENGRAM_ASSIGN_OR_RETURN(const std::string mismatch, CheckInt8Linear(parts, host, t));
    if (mismatch.empty()) {
      int8_state_ = 1;
      spdlog::info(
          "CUDA backend: int8 Linear weights run as dp4a GEMVs up to {} tokens (activations "
          "quantized per token and 32 inputs) and as dequantized BF16 cuBLAS GEMMs above",
          kInt8GemvMaxRows);
    } else {
      int8_state_ = -1;
      spdlog::warn("CUDA backend: int8 Linear weights are dequantized to BF16: {}", mismatch);
      return Tensor{};
    }
  }
  NoteLinearFormat("int8");
  *used = true;
  return t;
}

Status CudaBackend::LinearInt8(const Tensor& x, const Tensor& w, Tensor& out) {
  constexpr const char* kOp = "Linear (int8)";
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  const size_t scale_offset = Int8RowsScaleOffset(N, K);
  if (M <= kInt8GemvMaxRows) {
    const size_t bytes = ActScaleOffset(M, K) + static_cast<size_t>(M * Int8Blocks(K)) * 4;
    ENGRAM_ASSIGN_OR_RETURN(void* s, GetScratch(int8_scratch_, bytes, kOp));
    auto* q = static_cast<int8_t*>(s);
    auto* xs = reinterpret_cast<float*>(static_cast<char*>(s) + ActScaleOffset(M, K));
    ENGRAM_RETURN_IF_ERROR(
        LaunchStatus(LaunchQuantizeInt8Rows(x.ptr<float>(), M, K, q, Int8Padded(K), xs, stream()),
                     "Linear (quantize x)"));
    return LaunchStatus(
        LaunchInt8Gemv(w.data, scale_offset, N, K, q, xs, M, out.ptr<float>(), N, stream()), kOp);
  }
  // Prefill: the weight dequantized to BF16 a chunk of rows at a time (a multiple of 128), the
  // BF16 GEMM per chunk (column slice [n0, n0 + rows) of out).
  const int64_t rows = std::min<int64_t>(
      N, std::max<int64_t>(128, kInt8ChunkElems / std::max<int64_t>(K, 1) / 128 * 128));
  const size_t wbytes = RoundUp256(static_cast<size_t>(rows * K) * 2);
  const size_t xbytes = static_cast<size_t>(M * K) * 2;
  ENGRAM_ASSIGN_OR_RETURN(void* s, GetScratch(int8_scratch_, wbytes + xbytes, kOp));
  void* wb = s;
  void* xb = static_cast<char*>(s) + wbytes;
  ENGRAM_RETURN_IF_ERROR(LaunchStatus(
      LaunchConvert(x.data, Elem::kF32, xb, Elem::kBF16, M * K, stream()), "Linear (x to BF16)"));
  const float alpha = 1.f, beta = 0.f;
  const int64_t kb = Int8Blocks(K), kp = Int8Padded(K);
  const auto* codes = static_cast<const int8_t*>(w.data);
  const auto* scales = reinterpret_cast<const char*>(w.data) + scale_offset;
  for (int64_t n0 = 0; n0 < N; n0 += rows) {
    const int64_t r = std::min(rows, N - n0);
    // The chunk as its own kInt8Rows32 weight: its codes, then (at the offset its rows' codes
    // end) its scales; the dequantizer takes the scale pointer relative to the codes.
    const int8_t* chunk = codes + n0 * kp;
    const char* chunk_scales = scales + static_cast<size_t>(n0 * kb) * 4;
    const size_t rel = static_cast<size_t>(chunk_scales - reinterpret_cast<const char*>(chunk));
    ENGRAM_RETURN_IF_ERROR(LaunchStatus(LaunchDequantInt8Rows(chunk, rel, r, K, wb, stream()),
                                        "Linear (dequantize w)"));
    ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
        cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(r), static_cast<int>(M),
        static_cast<int>(K), &alpha, wb, CUDA_R_16BF, static_cast<int>(K), xb, CUDA_R_16BF,
        static_cast<int>(K), &beta, out.ptr<float>() + n0, CUDA_R_32F, static_cast<int>(N),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return Status::Ok();
}

}  // namespace engram::cuda
