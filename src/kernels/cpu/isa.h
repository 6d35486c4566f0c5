// Instruction-set selection for the CPU backend's kernels. SIMD kernels are compiled into
// functions with target attributes and chosen at run time; the scalar kernels run anywhere.
// Levels are cumulative: kAvx512 runs the AVX-512 Linear micro-kernels and the AVX2/FMA
// kernels everywhere else.
#pragma once

#include <string_view>

namespace engram {

enum class CpuIsa : unsigned char { kScalar, kAvx2, kAvx512 };

// Whether this CPU (and OS) executes AVX2 and FMA (and F16C) instructions.
bool CpuHasAvx2Fma();
// Whether it also executes AVX-512F.
bool CpuHasAvx512();

// The best level this CPU supports.
CpuIsa BestCpuIsa();

// The level the backend uses by default: BestCpuIsa(), capped by the environment variable
// ENGRAM_CPU_ISA ("scalar", "avx2" or "avx512"; other values are ignored).
CpuIsa DefaultCpuIsa();

// Whether `isa` runs the AVX2/FMA kernels.
inline bool UsesAvx2(CpuIsa isa) { return isa != CpuIsa::kScalar; }

std::string_view CpuIsaName(CpuIsa isa);

}  // namespace engram
