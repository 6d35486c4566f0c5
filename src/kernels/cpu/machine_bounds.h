// Machine bounds the forward benchmarks compare against: streaming read bandwidth (the bound
// of batch-1 decode, which streams every weight once per token) and peak FMA throughput (the
// bound of prefill GEMMs). Both run on `threads` threads (a private pool) and take the median
// of several runs; each call takes a few seconds and, for the bandwidth, 1 GiB of memory.
#pragma once

namespace engram {

// Read bandwidth in GB/s (1e9 bytes/s) over a 1 GiB buffer (far larger than any LLC).
double MeasureMemoryBandwidthGBs(int threads);

// Peak F32 GFLOP/s of independent FMA chains held in registers, 2 flops per FMA lane, on all
// threads, with the widest instruction set the CPU kernels use (DefaultCpuIsa(): AVX-512
// 16 lanes, AVX2/FMA 8 lanes, or plain scalar code), i.e. the peak the kernels could reach.
double MeasureFmaGflops(int threads);

// Peak int8 dot-product rate in GOP/s (2 ops per int8 multiply-add) of independent chains held
// in registers, with the instructions the int8 Linear kernels use (linear_int8.h): AVX-512
// VNNI vpdpbusd (64 multiply-adds each) where Int8KernelFor(DefaultCpuIsa()) picks it, AVX2
// vpmaddubsw + vpmaddwd + vpaddd (32), 0 for the scalar kernels (not measured).
double MeasureInt8Gops(int threads);

}  // namespace engram
