#include "kernels/cuda/cuda_handles.h"

#include "kernels/cuda/cuda_check.h"

namespace engram::cuda {

Result<CudaStream> CreateStream() {
  cudaStream_t s = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return CudaStream(s);
}

Result<CudaEvent> CreateEvent() {
  cudaEvent_t e = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return CudaEvent(e);
}

Result<CudaEvent> CreateTimingEvent() {
  cudaEvent_t e = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDefault));
  return CudaEvent(e);
}

Result<CublasHandle> CreateCublas() {
  cublasHandle_t h = nullptr;
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasCreate(&h));
  return CublasHandle(h);
}

Result<DeviceBuffer> AllocDevice(size_t bytes) {
  void* p = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes == 0 ? 1 : bytes));
  return DeviceBuffer(p, bytes);
}

Result<PinnedBuffer> AllocPinned(size_t bytes, unsigned flags) {
  void* p = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, bytes == 0 ? 1 : bytes, flags));
  return PinnedBuffer(p, bytes);
}

Result<void*> Scratch::Get(size_t bytes, cudaStream_t stream) {
  if (Holds(bytes)) return buf_.data();
  size_t want = 1 << 20;
  while (want < bytes) want *= 2;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  buf_ = DeviceBuffer();
  ENGRAM_ASSIGN_OR_RETURN(buf_, AllocDevice(want));
  return buf_.data();
}

Status CudaStatus(cudaError_t err, const char* what, const char* file, int line) {
  StatusCode code = StatusCode::kInternal;
  if (err == cudaErrorMemoryAllocation) code = StatusCode::kResourceExhausted;
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
      err == cudaErrorDevicesUnavailable || err == cudaErrorNoKernelImageForDevice) {
    code = StatusCode::kUnavailable;
  }
  return MakeStatus(code, "{} failed: {} ({}) at {}:{}", what, cudaGetErrorName(err),
                    cudaGetErrorString(err), file, line);
}

Status CublasStatus(cublasStatus_t err, const char* what, const char* file, int line) {
  StatusCode code = StatusCode::kInternal;
  if (err == CUBLAS_STATUS_ALLOC_FAILED) code = StatusCode::kResourceExhausted;
  if (err == CUBLAS_STATUS_NOT_INITIALIZED || err == CUBLAS_STATUS_ARCH_MISMATCH) {
    code = StatusCode::kUnavailable;
  }
  return MakeStatus(code, "{} failed: {} ({}) at {}:{}", what, cublasGetStatusName(err),
                    cublasGetStatusString(err), file, line);
}

}  // namespace engram::cuda
