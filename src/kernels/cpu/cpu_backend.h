// The CPU backend: multithreaded, AVX2/FMA where the CPU has it, portable otherwise.
//
// Prepared weights: kLinear weights are repacked into 16-column panels (linear.h; BF16 stays
// BF16, F32 and F16 become F32); kEmbedding tables (F32, BF16 or F16) are aliased, never
// copied (the caller keeps the host memory alive through host.owner); kVector weights are
// aliased when F32 and converted to F32 otherwise. The KV cache is F32. Activations and
// layouts are host memory; UploadLayout makes views of the layout's vectors.
#pragma once

#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/isa.h"

namespace engram {

// threads = options.threads, or one per physical core when 0; kernels for DefaultCpuIsa()
// (the best the CPU has; ENGRAM_CPU_ISA=scalar|avx2 caps it, e.g. to test the fallback).
Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options);

// The same with an explicit instruction set (tests use it to run both kernel families);
// UNAVAILABLE when the CPU lacks it.
Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options, CpuIsa isa);

}  // namespace engram
