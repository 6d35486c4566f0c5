// The CUDA backend (built when ENGRAM_HAVE_CUDA): cuBLAS GEMMs and CUDA kernels on one GPU.
//
// Choices (see docs and cuda_backend_impl.h for details):
//  - Linear weights are kept BF16 on the device; Linear rounds x to BF16 and runs a cuBLAS
//    BF16 x BF16 GEMM with F32 accumulation (CUBLAS_COMPUTE_32F): relative error ~3e-3 against
//    an exact product. An F32 device tensor passed as a weight runs a true F32 GEMM.
//  - The KV cache is F32 (kv_dtype()).
//  - Every op is enqueued on the backend's one compute stream and returns without waiting;
//    CopyToHost and Synchronize wait, and report (OUT_OF_RANGE) any index a kernel could not
//    use since the last wait (token ids, table rows, KV slots, state slots).
#pragma once

#include <memory>

#include "kernels/backend.h"

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace engram {

// UNAVAILABLE (with the CUDA error text) when no device is visible or the binary has no code
// for it; INVALID_ARGUMENT for a device_index that does not exist.
Result<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options);

// The compute stream (a cudaStream_t) on which `backend` issues all its work, for CUDA-graph
// capture of a step and for copy streams that order against compute with events. Null when
// `backend` is not the CUDA backend. Valid while the backend lives; owned by it.
CUstream_st* CudaComputeStream(const Backend& backend);

}  // namespace engram
