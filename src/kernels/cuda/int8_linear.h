// Int8 Linear weights on CUDA (BackendOptions::weights = "int8", or int8 files with "auto"):
// the CPU backend's format (symmetric int8 in blocks of 32 inputs, one F32 scale per block and
// output row, common/int8_block.h's rounding) in a row-major device layout, run two ways:
//  - M <= kInt8GemvMaxRows tokens (decode): the activations are quantized per token and
//    32-block the same way (int8_linear.cu) and a warp per output row sums dp4a dot products
//    per block, scaled by (weight scale x activation scale) in F32: the weights stream once, at
//    1.125 bytes each, the numerics are the CPU int8 kernels';
//  - more tokens (prefill): the weight is dequantized to BF16 into scratch and multiplied by
//    the BF16 activations with cuBLAS (tensor cores; the activations are not quantized).
// There is no int8 tensor-core (mma) kernel yet: cuBLASLt has no per-block int8 scaling.
//
// Device layout Layout::kInt8Rows32 (dtype U8, logical shape [N, K]): the codes as int8
// [N, Int8Padded(K)] row-major (each row zero padded to whole 32-blocks), then at
// Int8RowsScaleOffset(N, K) bytes the F32 scales [N, Int8Blocks(K)] row-major.
#pragma once

#include <cstddef>
#include <cstdint>

namespace engram::cuda {

inline constexpr int64_t kInt8GemmBlock = 32;
inline constexpr int64_t kInt8GemvMaxRows = 16;

inline constexpr int64_t Int8Blocks(int64_t k) { return (k + kInt8GemmBlock - 1) / kInt8GemmBlock; }
inline constexpr int64_t Int8Padded(int64_t k) { return Int8Blocks(k) * kInt8GemmBlock; }

size_t Int8RowsScaleOffset(int64_t n, int64_t k);
size_t Int8RowsBytes(int64_t n, int64_t k);

}  // namespace engram::cuda
