// Kernel micro-benchmarks behind `engram bench kernels`: the machine bounds (read bandwidth,
// FMA peak, int8 dot-product peak) beside the Linear kernels that meet them (batch-1 BF16 GEMV
// streaming weights, prefill GEMM at M = 128), the int8 Linear (GEMV against bandwidth over
// the int8 format's bytes, GEMM at M = 256 on `small`'s shapes against the int8 peak, and the
// activation quantizer alone) and the Engram row gathers (BF16 and packed FP8 tables, random
// rows; GB/s of table bytes read), each the median of several timed runs. The Linear, attention
// and gather rows use only the Backend interface, so any backend can be timed; the bounds are
// those of the host CPU.
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
  // A CPU backend made with BackendOptions::weights = "int8" (its PrepareWeight quantizes):
  // the int8 Linear rows run on it, beside the activation quantizer timed alone; null = none.
  Backend* int8_backend = nullptr;
};

// Runs the benchmarks on `backend` and returns a printable table.
std::string RunKernelBench(Backend& backend, const KernelBenchOptions& options = {});

}  // namespace engram
