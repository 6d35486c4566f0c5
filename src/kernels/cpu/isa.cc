#include "kernels/cpu/isa.h"

#include <algorithm>
#include <cstdlib>
#include <string_view>

namespace engram {

bool CpuHasAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}

bool CpuHasAvx512() { return CpuHasAvx2Fma() && __builtin_cpu_supports("avx512f"); }

CpuIsa BestCpuIsa() {
  if (CpuHasAvx512()) return CpuIsa::kAvx512;
  if (CpuHasAvx2Fma()) return CpuIsa::kAvx2;
  return CpuIsa::kScalar;
}

CpuIsa DefaultCpuIsa() {
  CpuIsa isa = BestCpuIsa();
  if (const char* env = std::getenv("ENGRAM_CPU_ISA")) {
    const std::string_view want(env);
    CpuIsa cap = isa;
    if (want == "scalar") cap = CpuIsa::kScalar;
    if (want == "avx2") cap = CpuIsa::kAvx2;
    if (want == "avx512") cap = CpuIsa::kAvx512;
    isa = std::min(isa, cap);
  }
  return isa;
}

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

}  // namespace engram
