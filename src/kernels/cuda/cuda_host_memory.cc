#include "kernels/cuda/cuda_host_memory.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "common/logging.h"
#include "kernels/cuda/cuda_check.h"

namespace engram::cuda {
namespace {

double GiB(size_t bytes) { return static_cast<double>(bytes) / static_cast<double>(1ull << 30); }

Status RegisterError(cudaError_t err, const void* ptr, size_t bytes) {
  const char* name = cudaGetErrorName(err);
  const char* text = cudaGetErrorString(err);
  switch (err) {
    case cudaErrorMemoryAllocation:
      return ResourceExhausted(
          "RegisterHostMemory: pinning {} bytes ({:.2f} GiB) at {} failed: the OS or driver "
          "could not lock that much memory ({}: {})",
          bytes, GiB(bytes), ptr, name, text);
    case cudaErrorHostMemoryAlreadyRegistered:
      return Unavailable(
          "RegisterHostMemory: {} bytes at {} overlap a range already registered with CUDA "
          "({}: {})",
          bytes, ptr, name, text);
    case cudaErrorNotSupported:
    case cudaErrorNotPermitted:
      return Unavailable(
          "RegisterHostMemory: this system does not allow registering {} bytes of host memory "
          "at {} with CUDA ({}: {})",
          bytes, ptr, name, text);
    case cudaErrorInvalidValue:
      return Unavailable(
          "RegisterHostMemory: the driver refused {} bytes at {} (not an ordinary mapping the "
          "driver can pin, or partly unmapped) ({}: {})",
          bytes, ptr, name, text);
    default:
      return Unavailable("RegisterHostMemory: cudaHostRegister of {} bytes at {} failed: {} ({})",
                         bytes, ptr, name, text);
  }
}

}  // namespace

Result<Tensor> AllocPinnedTensor(DType dtype, std::vector<int64_t> shape) {
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("AllocHostStaging: negative dimension in shape");
  }
  Tensor t;
  t.dtype = dtype;
  t.device = Device::kCpu;
  t.shape = std::move(shape);
  // At least 64 bytes, so an empty tensor still has an address (cudaHostAlloc returns
  // page-aligned memory).
  const size_t bytes = std::max<size_t>(t.nbytes(), 64);
  void* p = nullptr;
  const cudaError_t err = cudaHostAlloc(&p, bytes, cudaHostAllocPortable | cudaHostAllocMapped);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    if (err == cudaErrorMemoryAllocation) {
      return ResourceExhausted(
          "AllocHostStaging: cannot pin {} bytes ({:.2f} GiB) of host memory ({}: {})", bytes,
          GiB(bytes), cudaGetErrorName(err), cudaGetErrorString(err));
    }
    return Unavailable("AllocHostStaging: cudaHostAlloc of {} bytes failed: {} ({})", bytes,
                       cudaGetErrorName(err), cudaGetErrorString(err));
  }
  std::memset(p, 0, bytes);
  t.owner = std::shared_ptr<void>(p, [](void* q) { cudaFreeHost(q); });
  t.data = p;
  return t;
}

Status RegisterHost(void* ptr, size_t bytes, int device) {
  if (ptr == nullptr || bytes == 0) {
    return InvalidArgument("RegisterHostMemory: empty range ({} bytes at {})", bytes,
                           static_cast<const void*>(ptr));
  }
  constexpr unsigned kFlags = cudaHostRegisterPortable | cudaHostRegisterMapped;
  cudaError_t err = cudaHostRegister(ptr, bytes, kFlags);
  bool read_only = false;
  if (err != cudaSuccess && err != cudaErrorMemoryAllocation &&
      err != cudaErrorHostMemoryAlreadyRegistered) {
    // A mapping the process may only read (a PROT_READ mmap of a table file) can be pinned
    // only read-only for the device, which is all Gather and the copies need.
    int ro_supported = 0;
    if (cudaDeviceGetAttribute(&ro_supported, cudaDevAttrHostRegisterReadOnlySupported, device) ==
            cudaSuccess &&
        ro_supported != 0 &&
        cudaHostRegister(ptr, bytes, kFlags | cudaHostRegisterReadOnly) == cudaSuccess) {
      err = cudaSuccess;
      read_only = true;
    }
  }
  (void)cudaGetLastError();  // failures handled here must not reach a later launch check
  if (err != cudaSuccess) return RegisterError(err, ptr, bytes);

  // Kernels get the tensor's own address: that holds only if the mapped address is ptr (UVA,
  // true on every 64-bit platform CUDA supports today; checked rather than assumed).
  void* dev = nullptr;
  const cudaError_t map = cudaHostGetDevicePointer(&dev, ptr, 0);
  if (map != cudaSuccess || dev != ptr) {
    (void)cudaHostUnregister(ptr);
    (void)cudaGetLastError();
    if (map != cudaSuccess) {
      return Unavailable(
          "RegisterHostMemory: {} bytes at {} were pinned but are not mapped for device {} "
          "({}: {}); unregistered again",
          bytes, static_cast<const void*>(ptr), device, cudaGetErrorName(map),
          cudaGetErrorString(map));
    }
    return Unavailable(
        "RegisterHostMemory: device {} reads the {} bytes at {} at another address ({}); "
        "zero-copy needs unified addressing; unregistered again",
        device, bytes, static_cast<const void*>(ptr), dev);
  }
  if (read_only) {
    spdlog::info("RegisterHostMemory: {} bytes at {} registered read-only for the device", bytes,
                 static_cast<const void*>(ptr));
  }
  return Status::Ok();
}

void UnregisterHost(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  const cudaError_t err = cudaHostUnregister(ptr);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    spdlog::warn("UnregisterHostMemory: cudaHostUnregister of {} bytes at {} failed: {} ({})",
                 bytes, static_cast<const void*>(ptr), cudaGetErrorName(err),
                 cudaGetErrorString(err));
  }
}

Result<const void*> DeviceReadableAddress(const Tensor& t, int device, bool pageable_access,
                                          const char* op, const char* name) {
  if (t.data == nullptr) return InvalidArgument("{}: {} has no data", op, name);
  if (t.device == Device::kCuda) return static_cast<const void*>(t.data);
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, t.data);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    if (err == cudaErrorInvalidValue) {
      return InvalidArgument("{}: {} is at an address CUDA cannot classify ({}: {})", op, name,
                             cudaGetErrorName(err), cudaGetErrorString(err));
    }
    return CudaStatus(err, "cudaPointerGetAttributes", __FILE__, __LINE__);
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice:
    case cudaMemoryTypeManaged:
      return static_cast<const void*>(t.data);
    case cudaMemoryTypeHost:  // pinned or registered: zero-copy through the mapped address
      if (attr.devicePointer != nullptr) return static_cast<const void*>(attr.devicePointer);
      return InvalidArgument("{}: {} is pinned host memory not mapped for device {}", op, name,
                             device);
    default:
      if (pageable_access) return static_cast<const void*>(t.data);
      return InvalidArgument(
          "{}: {} is pageable host memory, which device {} cannot read; pin it "
          "(Backend::RegisterHostMemory or AllocHostStaging) or copy it to the device",
          op, name, device);
  }
}

}  // namespace engram::cuda
