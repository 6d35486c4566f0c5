// FP8 Linear weights on CUDA as block-scaled FP8 tensor-core GEMMs through cuBLASLt: the
// weight keeps the Hugging Face fine-grained FP8 format (E4M3 codes, one F32 scale per
// 128 x 128 block, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F) and the activations are
// quantized per token and 128 inputs on the fly (fp8_quant.cu, VEC128_32F). cuBLASLt offers
// these modes on Hopper (sm_90) from CUDA 12.9; Fp8Gemm::Supported says whether it offers an
// algorithm for a shape, and CudaBackend falls back to BF16 weights where it does not.
//
// Device layout Layout::kFp8Block128 (dtype U8, logical shape [N, K]): the N x K codes
// row-major, then at Fp8Block128ScaleOffset(N, K) bytes the F32 scales
// [ceil(N / 128), ceil(K / 128)] row-major (weight_scale_inv as stored).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "common/status.h"

namespace engram::cuda {

inline constexpr int64_t kFp8GemmBlock = 128;

// 128-blocks covering n values (the last one may be partial).
inline constexpr int64_t Fp8Blocks(int64_t n) { return (n + kFp8GemmBlock - 1) / kFp8GemmBlock; }

size_t Fp8Block128ScaleOffset(int64_t n, int64_t k);
size_t Fp8Block128Bytes(int64_t n, int64_t k);

// Bytes of the activation scratch Run needs for m x k: the E4M3 codes, then at
// Fp8ActScaleOffset(m, k) the scales.
size_t Fp8ActScaleOffset(int64_t m, int64_t k);
size_t Fp8ActScratchBytes(int64_t m, int64_t k);

class Fp8Gemm {
 public:
  Fp8Gemm();
  Fp8Gemm(Fp8Gemm&&) noexcept;
  Fp8Gemm& operator=(Fp8Gemm&&) noexcept;
  Fp8Gemm(const Fp8Gemm&) = delete;
  Fp8Gemm& operator=(const Fp8Gemm&) = delete;
  ~Fp8Gemm();

  // A cuBLASLt handle; UNAVAILABLE when this cuBLAS has no block-scaled FP8 modes.
  static Result<Fp8Gemm> Create();

  bool ready() const { return handle_ != nullptr; }
  // Whether cuBLASLt has an algorithm for m tokens x (n, k) within `workspace_bytes`.
  bool Supported(int64_t m, int64_t n, int64_t k, size_t workspace_bytes);

  // out[m, n] (F32, row-major) = sum_k x[m, k] w[n, k], x given as E4M3 codes `xq` [m, k]
  // with scales `xs` (Fp8ActScratchBytes's layout), w as kFp8Block128 at `w`.
  Status Run(const void* w, int64_t n, int64_t k, const void* xq, const float* xs, int64_t m,
             float* out, void* workspace, size_t workspace_bytes, cudaStream_t stream);

 private:
  struct Plan;
  Result<const Plan*> PlanFor(int64_t m, int64_t n, int64_t k, size_t workspace_bytes);

  cublasLtHandle_t handle_ = nullptr;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> plans_;  // by (m, n, k)
};

}  // namespace engram::cuda
