// Symmetric int8 blocks: the one rounding rule of every int8 weight engramd makes (the CPU
// backend's load-time quantization, kernels/cpu/linear_int8.h, and engram pack quantize
// --weights int8), so a model quantized offline loads bit-identical to one quantized at load.
//
// A block of n values v gets scale = max|v| / 127 (F32) and codes q[i] = round-to-nearest-even(
// v[i] * (127 / max|v|)) clamped to [-127, 127]; an all-zero block gets scale 0 and codes 0.
// The dequantized value is q[i] * scale.
//
// Thread safety: pure functions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace engram {

inline constexpr int kInt8WeightBlock = 32;  // inputs per scale

// The code of v given inv = 127 / amax (0 for an all-zero block).
inline int8_t Int8Code(float v, float inv) {
  const float r = std::nearbyint(v * inv);
  return static_cast<int8_t>(std::clamp(r, -127.f, 127.f));
}

// Quantizes v[0, n) into q[0, n) and returns the block's scale.
inline float QuantizeInt8Block(const float* v, int n, int8_t* q) {
  float amax = 0.f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  for (int i = 0; i < n; ++i) q[i] = Int8Code(v[i], inv);
  return amax / 127.f;
}

}  // namespace engram
