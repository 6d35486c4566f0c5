// Error checking for the CUDA backend: every CUDA runtime and cuBLAS call goes through one of
// these macros, which turn a failure into a Status naming the call, file and line.
//   ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(...));
//   ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(...));
// Host code only (.cc): device code (.cu) returns cudaError_t to its caller instead.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <source_location>

#include "common/status.h"

namespace engram::cuda {

// RESOURCE_EXHAUSTED for out-of-memory, UNAVAILABLE for a missing device or driver,
// INTERNAL otherwise; the message holds the CUDA error name and text.
Status CudaStatus(cudaError_t err, const char* what, const char* file, int line);
Status CublasStatus(cublasStatus_t err, const char* what, const char* file, int line);

// The status of a kernel launch (the cudaError_t a Launch* function returns), naming `op` and
// the caller's file and line.
inline Status LaunchStatus(cudaError_t err, const char* op,
                           std::source_location at = std::source_location::current()) {
  if (err == cudaSuccess) return Status::Ok();
  return CudaStatus(err, op, at.file_name(), static_cast<int>(at.line()));
}

}  // namespace engram::cuda

#define ENGRAM_CUDA_RETURN_IF_ERROR(expr)                                             \
  do {                                                                                \
    const cudaError_t _engram_cuda_err = (expr);                                      \
    if (_engram_cuda_err != cudaSuccess) {                                            \
      return ::engram::cuda::CudaStatus(_engram_cuda_err, #expr, __FILE__, __LINE__); \
    }                                                                                 \
  } while (0)

#define ENGRAM_CUBLAS_RETURN_IF_ERROR(expr)                                               \
  do {                                                                                    \
    const cublasStatus_t _engram_cublas_err = (expr);                                     \
    if (_engram_cublas_err != CUBLAS_STATUS_SUCCESS) {                                    \
      return ::engram::cuda::CublasStatus(_engram_cublas_err, #expr, __FILE__, __LINE__); \
    }                                                                                     \
  } while (0)
