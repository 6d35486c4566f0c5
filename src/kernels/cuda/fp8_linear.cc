#include "kernels/cuda/fp8_linear.h"

#include <cublas_v2.h>

#include <memory>
#include <utility>

#include "kernels/cuda/cuda_check.h"

// CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F / BLK128x128_32F: cuBLAS 12.9 and later.
#if defined(CUBLAS_VERSION) && CUBLAS_VERSION >= 120900
#define ENGRAM_CUBLASLT_BLOCK_FP8 1
#else
#define ENGRAM_CUBLASLT_BLOCK_FP8 0
#endif

namespace engram::cuda {
namespace {

size_t RoundUp256(size_t v) { return (v + 255) / 256 * 256; }

}  // namespace

size_t Fp8Block128ScaleOffset(int64_t n, int64_t k) {
  return RoundUp256(static_cast<size_t>(n) * static_cast<size_t>(k));
}

size_t Fp8Block128Bytes(int64_t n, int64_t k) {
  return Fp8Block128ScaleOffset(n, k) +
         static_cast<size_t>(Fp8Blocks(n)) * static_cast<size_t>(Fp8Blocks(k)) * sizeof(float);
}

size_t Fp8ActScaleOffset(int64_t m, int64_t k) {
  return RoundUp256(static_cast<size_t>(m) * static_cast<size_t>(k));
}

size_t Fp8ActScratchBytes(int64_t m, int64_t k) {
  return Fp8ActScaleOffset(m, k) +
         static_cast<size_t>(m) * static_cast<size_t>(Fp8Blocks(k)) * sizeof(float);
}

// The descriptors and the algorithm of one (m, n, k); `found` false when cuBLASLt offered none.
struct Fp8Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  ~Plan() {
    if (d != nullptr) cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

Fp8Gemm::Fp8Gemm() = default;

Fp8Gemm::Fp8Gemm(Fp8Gemm&& o) noexcept
    : handle_(std::exchange(o.handle_, nullptr)), plans_(std::move(o.plans_)) {
  o.plans_.clear();
}

Fp8Gemm& Fp8Gemm::operator=(Fp8Gemm&& o) noexcept {
  if (this != &o) {
    plans_.clear();  // before the handle they were made with
    if (handle_ != nullptr) cublasLtDestroy(handle_);
    handle_ = std::exchange(o.handle_, nullptr);
    plans_ = std::move(o.plans_);
    o.plans_.clear();
  }
  return *this;
}

Fp8Gemm::~Fp8Gemm() {
  plans_.clear();
  if (handle_ != nullptr) cublasLtDestroy(handle_);
  handle_ = nullptr;
}

Result<Fp8Gemm> Fp8Gemm::Create() {
  if (!ENGRAM_CUBLASLT_BLOCK_FP8) {
    return Unavailable("cuBLASLt {} has no block-scaled FP8 modes (needs cuBLAS 12.9)",
                       CUBLAS_VERSION);
  }
  Fp8Gemm g;
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&g.handle_));
  return g;
}

Result<const Fp8Gemm::Plan*> Fp8Gemm::PlanFor(int64_t m, int64_t n, int64_t k,
                                              size_t workspace_bytes) {
  const auto key = std::make_tuple(m, n, k);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  auto plan = std::make_unique<Plan>();
#if ENGRAM_CUBLASLT_BLOCK_FP8
  // Row-major out[m, n] = x[m, k] W[n, k]^T is column-major out^T[n, m] = W^T x^T: cuBLAS A
  // is W (k x n column-major, transposed: the "TN" form FP8 needs), B is x (k x m).
  ENGRAM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  ENGRAM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  ENGRAM_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  const cublasLtMatmulMatrixScale_t ma = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const cublasLtMatmulMatrixScale_t mb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma, sizeof(ma)));
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb, sizeof(mb)));
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan->a, CUDA_R_8F_E4M3, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan->b, CUDA_R_8F_E4M3, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(
      &plan->d, CUDA_R_32F, static_cast<uint64_t>(n), static_cast<uint64_t>(m), n));
  cublasLtMatmulPreference_t pref = nullptr;
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  cublasLtMatmulHeuristicResult_t heur{};
  int returned = 0;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes));
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->d, plan->d,
                                        pref, 1, &heur, &returned);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  // NOT_SUPPORTED (or no result) is an answer, not an error: the shape runs elsewhere.
  plan->found = st == CUBLAS_STATUS_SUCCESS && returned > 0;
  if (plan->found) plan->algo = heur.algo;
#endif
  const Plan* p = plan.get();
  plans_.emplace(key, std::move(plan));
  return p;
}

bool Fp8Gemm::Supported(int64_t m, int64_t n, int64_t k, size_t workspace_bytes) {
  if (handle_ == nullptr) return false;
  auto plan = PlanFor(m, n, k, workspace_bytes);
  return plan.ok() && (*plan)->found;
}

Status Fp8Gemm::Run(const void* w, int64_t n, int64_t k, const void* xq, const float* xs, int64_t m,
                    float* out, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (handle_ == nullptr) return FailedPrecondition("Fp8Gemm: no cuBLASLt handle");
  ENGRAM_ASSIGN_OR_RETURN(const Plan* plan, PlanFor(m, n, k, workspace_bytes));
  if (!plan->found) {
    return Unimplemented("Fp8Gemm: cuBLASLt has no block-scaled FP8 algorithm for {}x{}x{}", m, n,
                         k);
  }
  const void* ws = static_cast<const char*>(w) + Fp8Block128ScaleOffset(n, k);
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ws, sizeof(ws)));
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &xs, sizeof(xs)));
  const float alpha = 1.f, beta = 0.f;
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, plan->desc, &alpha, w, plan->a, xq, plan->b,
                                               &beta, out, plan->d, out, plan->d, &plan->algo,
                                               workspace, workspace_bytes, stream));
  return Status::Ok();
}

}  // namespace engram::cuda
