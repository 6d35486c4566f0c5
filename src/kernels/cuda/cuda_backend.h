// The CUDA backend (built when ENGRAM_HAVE_CUDA): cuBLAS GEMMs and CUDA kernels.
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace engram {

// UNAVAILABLE (with the CUDA error text) when no device is visible.
Result<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options);

}  // namespace engram
