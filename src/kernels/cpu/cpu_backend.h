// The CPU backend: multithreaded, AVX2/FMA where the CPU has it, portable otherwise.
#pragma once

#include <memory>

#include "kernels/backend.h"

namespace engram {

Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options);

}  // namespace engram
