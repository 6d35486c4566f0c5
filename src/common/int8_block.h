// Symmetric int8 blocks: the one rounding rule of every int8 weight engramd makes (the CPU
// backend's load-time quantization, kernels/cpu/linear_int8.h, and engram pack quantize
// --weights int8), so a model quantized offline loads bit-identical to one quantized at load.
//
// A block of n values v gets scale = max|v| / 127 (F32) and codes q[i] = round-to-nearest-even(
// v[i] * (127 / max|v|)) clamped to [-127, 127]; a block whose max|v| is below kInt8MinAmax
// (all zero, or so small that 127 / max|v| would overflow to infinity) gets scale 0 and codes
// 0. The dequantized value is q[i] * scale.
//
// Thread safety: pure functions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace engram {

inline constexpr int kInt8WeightBlock = 32;  // inputs per scale
// 2^-121: the smallest max|v| whose 127 / max|v| is finite in F32 (the CUDA kernels,
// kernels/cuda/int8_linear.cu, use the same value).
inline constexpr float kInt8MinAmax = 0x1p-121f;

// 127 / amax, or 0 for a block below kInt8MinAmax.
inline float Int8InverseScale(float amax) { return amax >= kInt8MinAmax ? 127.f / amax : 0.f; }
// amax / 127, or 0 for a block below kInt8MinAmax.
inline float Int8Scale(float amax) { return amax >= kInt8MinAmax ? amax / 127.f : 0.f; }

// The code of v given inv = 127 / amax (0 for an all-zero block).
inline int8_t Int8Code(float v, float inv) {
  const float r = std::nearbyint(v * inv);
  return static_cast<int8_t>(std::clamp(r, -127.f, 127.f));
}

// Quantizes v[0, n) into q[0, n) and returns the block's scale.
inline float QuantizeInt8Block(const float* v, int n, int8_t* q) {
  float amax = 0.f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  const float inv = Int8InverseScale(amax);
  for (int i = 0; i < n; ++i) q[i] = Int8Code(v[i], inv);
  return Int8Scale(amax);
}

}  // namespace engram
