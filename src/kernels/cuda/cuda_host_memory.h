// Host memory the CUDA device reads (internal to src/kernels/cuda): pinned staging tensors,
// registration of caller-owned ranges, and the address at which kernels read a tensor that may
// live in host memory. Shared by CudaBackend (GatherRows, AllocHostStaging, RegisterHostMemory)
// and CudaRowChannel (Gather).
//
// Every function acts on the calling thread's current device: the caller makes its device
// current (cudaSetDevice) first. A CUDA call that fails here is also cleared from the thread's
// last-error state, so a later launch check does not report it again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/tensor.h"

namespace engram::cuda {

// A CPU tensor over zero-filled pinned memory (cudaHostAlloc, portable and mapped: copies from
// it are asynchronous DMA, and kernels may read it in place). The tensor's owner frees it with
// cudaFreeHost, on whichever thread drops the last reference. INVALID_ARGUMENT for a negative
// dimension, RESOURCE_EXHAUSTED (naming the bytes) when the driver cannot pin that much.
Result<Tensor> AllocPinnedTensor(DType dtype, std::vector<int64_t> shape);

// cudaHostRegister(ptr, bytes, portable | mapped) on the current device (`device`, for messages
// and attribute queries). A range the driver refuses to map writable (e.g. a PROT_READ mmap of a
// file) is registered read-only where the device supports that. Then checks that the device
// reads the range at the same address (UVA), so a tensor over it can be passed to kernels as is;
// if not, the range is unregistered again. Errors (the memory stays usable, unpinned):
//   INVALID_ARGUMENT   null ptr or zero bytes;
//   RESOURCE_EXHAUSTED the OS or driver could not lock that many bytes (out of memory);
//   UNAVAILABLE        any other refusal, named: already registered (overlaps a registered
//                      range), not supported on this system, not mapped at the same address.
Status RegisterHost(void* ptr, size_t bytes, int device);
// cudaHostUnregister(ptr); a failure is logged (warning), not returned. No kernel or copy may
// still be reading the range.
void UnregisterHost(void* ptr, size_t bytes);

// The address at which kernels on the current device read t.data: t.data for a device tensor
// and for device or managed memory; the driver's mapped address (t.data under UVA) for pinned
// or registered host memory; t.data for pageable host memory when the device can read it
// (pageable_access: HMM/ATS). INVALID_ARGUMENT naming `op` and `name` otherwise (no data,
// pinned but not mapped for this device, pageable on a device that cannot read it).
Result<const void*> DeviceReadableAddress(const Tensor& t, int device, bool pageable_access,
                                          const char* op, const char* name);

}  // namespace engram::cuda
