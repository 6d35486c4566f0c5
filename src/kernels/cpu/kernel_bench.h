// Kernel micro-benchmarks behind `engram bench kernels`: the machine bounds (read bandwidth,
// FMA peak) beside the Linear kernels that meet them (batch-1 BF16 GEMV streaming weights,
// prefill GEMM at M = 128) and the Engram row gathers (BF16 and packed FP8 tables, random
// rows; GB/s of table bytes read), each the median of several timed runs. Uses only the Backend
// interface, so any backend can be timed; the bounds are those of the host CPU.
#pragma once

#include <string>

#include "kernels/backend.h"

namespace engram {

struct KernelBenchOptions {
  int threads = 0;               // threads for the machine bounds; 0 = one per physical core
  int runs = 7;                  // timed runs per row (the median is reported)
  bool machine_bounds = true;    // measure bandwidth and FMA peak (a few seconds, 1 GiB)
  bool row_major = true;         // also time unpacked (row-major) weights, for comparison
  bool linear_attention = true;  // the Linear and attention rows
  bool gathers = true;           // the Engram row gathers (GatherRows: BF16 and packed FP8)
};

// Runs the benchmarks on `backend` and returns a printable table.
std::string RunKernelBench(Backend& backend, const KernelBenchOptions& options = {});

}  // namespace engram
