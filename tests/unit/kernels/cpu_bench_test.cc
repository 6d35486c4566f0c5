// Measurements, not checks: run with --gtest_also_run_disabled_tests
// --gtest_filter='CpuBench.*' on an otherwise idle machine.
#include <gtest/gtest.h>

#include <cstdio>

#include "cpu_test_util.h"
#include "kernels/cpu/kernel_bench.h"
#include "kernels/cpu/machine_bounds.h"

namespace engram {
namespace {

TEST(CpuBench, DISABLED_KernelTable) {
  BackendOptions options;  // threads: one per physical core
  auto backend = CreateCpuBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  std::printf("%s", RunKernelBench(**backend).c_str());
}

TEST(CpuBench, DISABLED_KernelTableOneThread) {
  BackendOptions options;
  options.threads = 1;
  auto backend = CreateCpuBackend(options);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  KernelBenchOptions bench;
  bench.threads = 1;
  std::printf("%s", RunKernelBench(**backend, bench).c_str());
}

// The Engram row gathers alone (BF16 and packed FP8), on every instruction set: the FP8
// decode paths side by side.
TEST(CpuBench, DISABLED_GatherRows) {
  for (CpuIsa isa : cpu_test::IsasToTest()) {
    BackendOptions options;
    auto backend = CreateCpuBackend(options, isa);
    ASSERT_TRUE(backend.ok()) << backend.status().ToString();
    KernelBenchOptions bench;
    bench.machine_bounds = isa == cpu_test::IsasToTest().back();
    bench.linear_attention = false;
    std::printf("%s", RunKernelBench(**backend, bench).c_str());
  }
}

}  // namespace
}  // namespace engram
