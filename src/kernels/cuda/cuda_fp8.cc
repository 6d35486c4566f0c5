// CudaBackend's FP8 Linear weights (fp8_linear.h): which parts qualify, their upload as
// Layout::kFp8Block128, the check of the first one, and Linear on them.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/logging.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_check.h"

namespace engram::cuda {
namespace {

// Relative Frobenius error bar of the first FP8 weight against float64: activations rounded to
// E4M3 (3 mantissa bits, 2^-4 relative at worst, ~2-3% RMS) dominate; a wrong scale layout or
// operand order gives errors of order 1.
constexpr double kFp8CheckTol = 0.1;
constexpr int64_t kFp8CheckRows = 16;  // one of the row counts Fp8GemmRefusal asks for

}  // namespace

std::string CudaBackend::Fp8GemmRefusal(const std::vector<LinearSource>& parts, bool* fp8) {
  *fp8 = !parts.empty();
  for (const LinearSource& p : parts) {
    if (!p.quantized() || p.w.dtype != DType::kF8E4M3 || p.block_n != kFp8GemmBlock ||
        p.block_k != kFp8GemmBlock || p.w.shape.size() != 2) {
      *fp8 = false;
    }
  }
  if (!*fp8) return "not FP8 in 128 x 128 blocks";
  if (fp8_state_ < 0) return "off";
  if (sm_ < 90) return fmt::format("sm_{} (block-scaled FP8 GEMMs need Hopper, sm_90)", sm_);
  const int64_t K = parts[0].w.dim(1);
  int64_t N = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const LinearSource& p = parts[i];
    if (p.w.dim(1) != K) return fmt::format("{}: K {} differs from {}", p.name, p.w.dim(1), K);
    if (p.scale_inv.dtype != DType::kF32) {
      return fmt::format("{}: weight_scale_inv is {}, not F32", p.name,
                         DTypeName(p.scale_inv.dtype));
    }
    if (p.scale_inv.shape != std::vector<int64_t>{Fp8Blocks(p.w.dim(0)), Fp8Blocks(K)}) {
      return fmt::format("{}: weight_scale_inv has shape {}", p.name, p.scale_inv.ShapeString());
    }
    if (i + 1 < parts.size() && p.w.dim(0) % kFp8GemmBlock != 0) {
      return fmt::format("{}: {} rows do not end on a 128-row block of the fused weight", p.name,
                         p.w.dim(0));
    }
    N += p.w.dim(0);
  }
  if (N % 16 != 0 || K % 16 != 0) {
    return fmt::format("[{}, {}] is not a multiple of 16 (FP8 tensor cores' alignment)", N, K);
  }
  if (!fp8_gemm_.ready()) {  // made on first use; an older cuBLAS answers here
    auto g = Fp8Gemm::Create();
    if (!g.ok()) return g.status().ToString();
    fp8_gemm_ = std::move(*g);
  }
  for (int64_t m : {int64_t{1}, int64_t{16}, int64_t{512}}) {
    if (!fp8_gemm_.Supported(m, N, K, cublas_workspace_.bytes())) {
      return fmt::format("cuBLASLt offers no block-scaled FP8 algorithm for {} x {} x {}", m, N, K);
    }
  }
  return "";
}

Result<Tensor> CudaBackend::UploadFp8Linear(const std::vector<LinearSource>& parts) {
  const int64_t K = parts[0].w.dim(1), kb = Fp8Blocks(K);
  int64_t N = 0;
  for (const LinearSource& p : parts) N += p.w.dim(0);
  std::vector<uint8_t> host(Fp8Block128Bytes(N, K));
  uint8_t* codes = host.data();
  float* scales = reinterpret_cast<float*>(host.data() + Fp8Block128ScaleOffset(N, K));
  for (const LinearSource& p : parts) {
    std::memcpy(codes, p.w.data, p.w.nbytes());
    codes += p.w.nbytes();
    std::memcpy(scales, p.scale_inv.data, p.scale_inv.nbytes());
    scales += Fp8Blocks(p.w.dim(0)) * kb;
  }
  ENGRAM_RETURN_IF_ERROR(NotCapturing("PrepareLinear"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  void* p = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, host.size()));
  Tensor t;
  t.owner = std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
  t.data = p;
  t.dtype = DType::kU8;
  t.device = Device::kCuda;
  t.layout = Layout::kFp8Block128;
  t.shape = {N, K};
  ENGRAM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(p, host.data(), host.size(), cudaMemcpyHostToDevice, stream()));
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));  // `host` dies here
  return t;
}

Status CudaBackend::CheckFp8Linear(const std::vector<LinearSource>& parts, const Tensor& w) {
  const int64_t M = kFp8CheckRows, N = w.dim(0), K = w.dim(1);
  ENGRAM_ASSIGN_OR_RETURN(Tensor deq, StackLinearSources(parts, DType::kF32));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(M * K));
  for (float& v : x) v = nd(rng);
  ENGRAM_ASSIGN_OR_RETURN(Tensor xd, Alloc(DType::kF32, {M, K}));
  ENGRAM_ASSIGN_OR_RETURN(Tensor od, Alloc(DType::kF32, {M, N}));
  ENGRAM_RETURN_IF_ERROR(CopyFromHost(x.data(), xd));
  ENGRAM_RETURN_IF_ERROR(LinearFp8(xd, w, od));
  std::vector<float> out(static_cast<size_t>(M * N));
  ENGRAM_RETURN_IF_ERROR(CopyToHost(od, out.data()));
  const float* wf = deq.ptr<float>();
  double num = 0, den = 0;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0;
      for (int64_t k = 0; k < K; ++k) ref += double{x[m * K + k]} * wf[n * K + k];
      const double d = out[m * N + n] - ref;
      num += d * d;
      den += ref * ref;
    }
  }
  const double err = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (!(err <= kFp8CheckTol)) {
    return Internal("{}: the FP8 GEMM is {:.3g} (relative) from the float64 product, over {}",
                    parts[0].name, err, kFp8CheckTol);
  }
  spdlog::info("CUDA backend: {} as an FP8 GEMM is {:.2e} (relative) from float64", parts[0].name,
               err);
  return Status::Ok();
}

Result<Tensor> CudaBackend::PrepareLinear(const std::vector<LinearSource>& parts) {
  // cuBLASLt's handle and heuristics take the calling thread's current device.
  ENGRAM_RETURN_IF_ERROR(Activate());
  bool int8 = false;
  ENGRAM_ASSIGN_OR_RETURN(Tensor i8, PrepareInt8Linear(parts, &int8));
  if (int8) return i8;
  bool fp8 = false;
  // weights "bf16" dequantizes FP8 files, "int8" requantizes them (PrepareInt8Linear).
  const std::string refusal = weights_ == "auto" ? Fp8GemmRefusal(parts, &fp8) : "";
  if (fp8 && refusal.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(Tensor t, UploadFp8Linear(parts));
    if (fp8_state_ == 0) {
      const Status check = CheckFp8Linear(parts, t);
      if (check.ok()) {
        fp8_state_ = 1;
        spdlog::info(
            "CUDA backend: FP8 Linear weights run as block-scaled FP8 tensor-core GEMMs "
            "(cuBLASLt: 128 x 128 weight scales, activations quantized per token and 128 "
            "inputs)");
      } else {
        fp8_state_ = -1;
        spdlog::warn("CUDA backend: FP8 Linear weights are dequantized to BF16: {}",
                     check.ToString());
      }
    }
    if (fp8_state_ > 0) {
      NoteLinearFormat("fp8");
      return t;
    }
  } else if (fp8 && fp8_state_ >= 0) {
    // The device or cuBLAS rule the path out for every weight; a shape only for this one.
    if (sm_ < 90 || !fp8_gemm_.ready()) {
      fp8_state_ = -1;
      spdlog::warn("CUDA backend: FP8 Linear weights are dequantized to BF16: {}", refusal);
    } else {
      spdlog::warn("CUDA backend: {} is dequantized to BF16: {}", parts[0].name, refusal);
    }
  }
  return Backend::PrepareLinear(parts);
}

Status CudaBackend::LinearFp8(const Tensor& x, const Tensor& w, Tensor& out) {
  constexpr const char* kOp = "Linear (FP8)";
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  const size_t workspace = cublas_workspace_.bytes();
  if (fp8_gemm_.Supported(M, N, K, workspace)) {
    ENGRAM_ASSIGN_OR_RETURN(void* s, GetScratch(fp8_scratch_, Fp8ActScratchBytes(M, K), kOp));
    auto* q = static_cast<uint8_t*>(s);
    auto* xs = reinterpret_cast<float*>(q + Fp8ActScaleOffset(M, K));
    ENGRAM_RETURN_IF_ERROR(LaunchStatus(LaunchQuantizeFp8Act(x.ptr<float>(), M, K, q, xs, stream()),
                                        "Linear (quantize x)"));
    return fp8_gemm_.Run(w.data, N, K, q, xs, M, out.ptr<float>(), cublas_workspace_.data(),
                         workspace, stream());
  }
  // A row count cuBLASLt has no FP8 algorithm for: the weight dequantized to BF16 for this
  // call, then the BF16 GEMM.
  const size_t wbytes = static_cast<size_t>(N * K) * 2, xbytes = static_cast<size_t>(M * K) * 2;
  ENGRAM_ASSIGN_OR_RETURN(void* s, GetScratch(fp8_scratch_, wbytes + xbytes, kOp));
  void* wb = s;
  void* xb = static_cast<char*>(s) + wbytes;
  ENGRAM_RETURN_IF_ERROR(LaunchStatus(
      LaunchDequantFp8Block128(w.data, Fp8Block128ScaleOffset(N, K), N, K, wb, stream()),
      "Linear (dequantize w)"));
  ENGRAM_RETURN_IF_ERROR(LaunchStatus(
      LaunchConvert(x.data, Elem::kF32, xb, Elem::kBF16, M * K, stream()), "Linear (x to BF16)"));
  const float alpha = 1.f, beta = 0.f;
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, wb, CUDA_R_16BF, k, xb, CUDA_R_16BF,
      k, &beta, out.data, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return Status::Ok();
}

}  // namespace engram::cuda
