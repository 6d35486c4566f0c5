// Force-included into src/kernels/cpu/isa.cc by tests/fuzz/CMakeLists.txt when the fuzz build
// uses clang < 15, whose __builtin_cpu_supports does not know "f16c" (an error, not a warning).
// The builtin is routed through a function that answers "f16c" from CPUID leaf 1 (ECX bit 29)
// and passes every other feature name to the builtin. Remove once isa.cc compiles on clang 14.
#pragma once

#include <cpuid.h>

#include <string_view>

namespace engram_fuzz_compat {

inline bool CpuSupports(std::string_view feature) {
  if (feature == "f16c") {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  }
  if (feature == "avx2") return __builtin_cpu_supports("avx2");
  if (feature == "fma") return __builtin_cpu_supports("fma");
  if (feature == "avx512f") return __builtin_cpu_supports("avx512f");
  return false;
}

}  // namespace engram_fuzz_compat

#define __builtin_cpu_supports(feature) ::engram_fuzz_compat::CpuSupports(feature)
