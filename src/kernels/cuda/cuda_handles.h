// RAII owners of the CUDA and cuBLAS handles the CUDA backend holds. Each is move-only, made
// by a Create function that returns a Status instead of throwing, and released in its
// destructor (errors at release are ignored: there is no one left to tell).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "common/status.h"

namespace engram::cuda {

// Owns one handle of type H, released by Traits::Destroy.
template <typename H, typename Traits>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(H h) : h_(h) {}
  UniqueHandle(UniqueHandle&& o) noexcept : h_(std::exchange(o.h_, H{})) {}
  UniqueHandle& operator=(UniqueHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, H{});
    }
    return *this;
  }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  ~UniqueHandle() { reset(); }

  H get() const { return h_; }
  explicit operator bool() const { return h_ != H{}; }
  void reset() {
    if (h_ != H{}) Traits::Destroy(h_);
    h_ = H{};
  }

 private:
  H h_{};
};

struct StreamTraits {
  static void Destroy(cudaStream_t s) { cudaStreamDestroy(s); }
};
struct EventTraits {
  static void Destroy(cudaEvent_t e) { cudaEventDestroy(e); }
};
struct GraphTraits {
  static void Destroy(cudaGraph_t g) { cudaGraphDestroy(g); }
};
// Destroying an executable graph that is still running is allowed: CUDA frees it once done.
struct GraphExecTraits {
  static void Destroy(cudaGraphExec_t g) { cudaGraphExecDestroy(g); }
};
struct CublasTraits {
  static void Destroy(cublasHandle_t h) { cublasDestroy(h); }
};
struct DeviceMemTraits {
  static void Destroy(void* p) { cudaFree(p); }
};
struct PinnedMemTraits {
  static void Destroy(void* p) { cudaFreeHost(p); }
};

using CudaStream = UniqueHandle<cudaStream_t, StreamTraits>;
using CudaEvent = UniqueHandle<cudaEvent_t, EventTraits>;
using CublasHandle = UniqueHandle<cublasHandle_t, CublasTraits>;
using CudaGraph = UniqueHandle<cudaGraph_t, GraphTraits>;
using CudaGraphExec = UniqueHandle<cudaGraphExec_t, GraphExecTraits>;

// A non-blocking stream (does not synchronize with the legacy default stream).
Result<CudaStream> CreateStream();
// An event without timing (cheapest to record and wait on).
Result<CudaEvent> CreateEvent();
// An event with timing, for cudaEventElapsedTime.
Result<CudaEvent> CreateTimingEvent();
Result<CublasHandle> CreateCublas();

// Bytes of device memory (cudaMalloc) or pinned host memory (cudaHostAlloc), with size.
template <typename Traits>
class Buffer {
 public:
  Buffer() = default;
  Buffer(void* p, size_t bytes) : mem_(p), bytes_(bytes) {}
  void* data() const { return mem_.get(); }
  size_t bytes() const { return bytes_; }

 private:
  UniqueHandle<void*, Traits> mem_;
  size_t bytes_ = 0;
};
using DeviceBuffer = Buffer<DeviceMemTraits>;
using PinnedBuffer = Buffer<PinnedMemTraits>;

Result<DeviceBuffer> AllocDevice(size_t bytes);
// flags: cudaHostAlloc flags (e.g. cudaHostAllocMapped).
Result<PinnedBuffer> AllocPinned(size_t bytes, unsigned flags = cudaHostAllocDefault);

// A device buffer that grows on demand, for per-op temporaries (BF16 copies of activations,
// per-token norms). Growing waits for `stream` first, so work still reading the old buffer
// finishes; steady state never allocates (and so is safe under CUDA-graph capture).
class Scratch {
 public:
  Result<void*> Get(size_t bytes, cudaStream_t stream);
  // Whether Get(bytes) returns the current buffer (no growth, no synchronization).
  bool Holds(size_t bytes) const { return buf_.data() != nullptr && bytes <= buf_.bytes(); }

 private:
  DeviceBuffer buf_;
};

}  // namespace engram::cuda
