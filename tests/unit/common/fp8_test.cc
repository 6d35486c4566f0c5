// The FP8 codecs (dtype.h: E4M3, E8M0) over all 256 codes against formula references, the
// encoder's rounding (nearest even), saturation and underflow against a brute-force nearest-
// value search, the block scale rule (E8M0ScaleFor), and the block quantizers' round trips
// (fp8.h: rows of 32-value blocks, ragged 32x32 tiles).
#include "common/fp8.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/dtype.h"

namespace engram {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// The OCP E4M3FN value of code c by its definition, in double: NaN for S.1111.111.
double RefE4M3(int c) {
  const int s = (c >> 7) & 1, e = (c >> 3) & 0xf, m = c & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? m * std::pow(2.0, -9) : (1.0 + m / 8.0) * std::pow(2.0, e - 7);
  return s ? -mag : mag;
}

bool IsNanCode(int c) { return (c & 0x7f) == 0x7f; }

// The non-negative finite E4M3 values in code order (codes 0x00..0x7e), increasing.
std::vector<double> NonNegativeGrid() {
  std::vector<double> g;
  for (int c = 0; c < 0x7f; ++c) g.push_back(RefE4M3(c));
  return g;
}

// The nearest-even E4M3 code of f by search over the grid, saturating at 448.
uint8_t RefEncode(float f) {
  static const std::vector<double> grid = NonNegativeGrid();
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return sign | 0x7f;
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 448.0) return sign | 0x7e;
  const auto hi = std::lower_bound(grid.begin(), grid.end(), a);  // first >= a (exists)
  int c = static_cast<int>(hi - grid.begin());
  if (*hi != a) {
    const int lo = c - 1;
    const double dlo = a - grid[lo], dhi = grid[c] - a;
    if (dlo < dhi || (dlo == dhi && (lo & 1) == 0)) c = lo;
  }
  return static_cast<uint8_t>(sign | c);
}

TEST(E4M3, DecodesEveryCodeAsTheFormulaSays) {
  for (int c = 0; c < 256; ++c) {
    const float got = E4M3ToF32(static_cast<uint8_t>(c));
    const double want = RefE4M3(c);
    if (IsNanCode(c)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      EXPECT_EQ(std::signbit(got), c >= 0x80) << "code " << c;
      continue;
    }
    EXPECT_EQ(static_cast<double>(got), want) << "code " << c;
    EXPECT_EQ(std::signbit(got), c >= 0x80) << "code " << c;  // -0 for 0x80
  }
  // Landmarks: zeros, the smallest and largest subnormal, the smallest normal, 1, the maximum.
  EXPECT_EQ(Bits(E4M3ToF32(0x00)), Bits(0.0f));
  EXPECT_EQ(Bits(E4M3ToF32(0x80)), Bits(-0.0f));
  EXPECT_EQ(E4M3ToF32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(E4M3ToF32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(E4M3ToF32(0x08), std::ldexp(1.0f, -6));
  EXPECT_EQ(E4M3ToF32(0x38), 1.0f);
  EXPECT_EQ(E4M3ToF32(0x7e), 448.0f);
  EXPECT_EQ(E4M3ToF32(0xfe), -448.0f);
  EXPECT_EQ(E4M3ToF32(0x77), 240.0f);
  EXPECT_TRUE(std::isnan(E4M3ToF32(0x7f)));
  EXPECT_TRUE(std::isnan(E4M3ToF32(0xff)));
  // No infinities: every other code with E = 15 is finite.
  for (int c = 0x78; c < 0x7f; ++c) EXPECT_TRUE(std::isfinite(E4M3ToF32(c))) << c;
}

TEST(E4M3, EncodesEveryDecodedCodeBackToItself) {
  for (int c = 0; c < 256; ++c) {
    if (IsNanCode(c)) continue;
    EXPECT_EQ(F32ToE4M3(E4M3ToF32(static_cast<uint8_t>(c))), c) << "code " << c;
  }
  EXPECT_EQ(F32ToE4M3(kNaN), 0x7f);
  EXPECT_EQ(F32ToE4M3(-kNaN), 0xff);
  EXPECT_EQ(F32ToE4M3(FromBits(0x7f800001u)), 0x7f);  // a signalling NaN
  EXPECT_EQ(F32ToE4M3(FromBits(0xffffffffu)), 0xff);
}

TEST(E4M3, RoundsMidpointsToEvenAndNeighboursToNearest) {
  const std::vector<double> grid = NonNegativeGrid();
  // Midpoints of adjacent finite values (exact in F32: one bit more than E4M3 has), and the
  // F32 values on either side of them. Code order is value order, and the code's last bit is
  // the mantissa's, so "even" is an even code.
  for (int c = 0; c + 1 < 0x7f; ++c) {
    const float mid = static_cast<float>((grid[c] + grid[c + 1]) / 2);
    ASSERT_EQ(static_cast<double>(mid), (grid[c] + grid[c + 1]) / 2);
    const int even = (c & 1) == 0 ? c : c + 1;
    for (float sign : {1.f, -1.f}) {
      const int s = sign < 0 ? 0x80 : 0;
      EXPECT_EQ(F32ToE4M3(sign * mid), s | even) << "midpoint after code " << c;
      EXPECT_EQ(F32ToE4M3(sign * std::nextafter(mid, 0.f)), s | c) << c;
      EXPECT_EQ(F32ToE4M3(sign * std::nextafter(mid, kInf)), s | (c + 1)) << c;
    }
  }
  // Between 0 and the smallest subnormal 2^-9: 2^-10 ties to 0.
  EXPECT_EQ(F32ToE4M3(std::ldexp(1.f, -10)), 0x00);
  EXPECT_EQ(F32ToE4M3(std::nextafter(std::ldexp(1.f, -10), 1.f)), 0x01);
  EXPECT_EQ(F32ToE4M3(3 * std::ldexp(1.f, -10)), 0x02);     // 1.5 * 2^-9: to even (2)
  EXPECT_EQ(F32ToE4M3(5 * std::ldexp(1.f, -10)), 0x02);     // 2.5 * 2^-9: to even (2)
  EXPECT_EQ(F32ToE4M3(3 * std::ldexp(1.f, -11)), 0x01);     // 0.75 * 2^-9: up to 1
  EXPECT_EQ(F32ToE4M3(1.0625f), 0x38);                      // 1 + 1/16: to even (1.0)
  EXPECT_EQ(F32ToE4M3(1.1875f), 0x3a);                      // 1 + 3/16: to even (1.25)
  EXPECT_EQ(F32ToE4M3(7.5f * std::ldexp(1.f, -9)), 0x08);   // largest subnormal + 1/2: 2^-6
  EXPECT_EQ(F32ToE4M3(15.5f * std::ldexp(1.f, -9)), 0x10);  // 1.9375 * 2^-6: to even (2^-5)
}

TEST(E4M3, SaturatesAtPlusMinus448) {
  for (float v :
       {448.f, 449.f, 463.9f, 464.f, 480.f, 1e30f, std::numeric_limits<float>::max(), kInf}) {
    EXPECT_EQ(F32ToE4M3(v), 0x7e) << v;
    EXPECT_EQ(F32ToE4M3(-v), 0xfe) << -v;
  }
  EXPECT_EQ(F32ToE4M3(447.f), 0x7e);
  EXPECT_EQ(F32ToE4M3(432.f), 0x7e);  // the midpoint of 416 and 448: to even (448)
  EXPECT_EQ(F32ToE4M3(431.f), 0x7d);
}

TEST(E4M3, TinyValuesGoToSignedZero) {
  for (float v : {1e-30f, std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min(), std::ldexp(1.f, -11), 0.f}) {
    EXPECT_EQ(F32ToE4M3(v), 0x00) << v;
    EXPECT_EQ(F32ToE4M3(-v), 0x80) << -v;
  }
}

TEST(E4M3, EncoderMatchesNearestValueSearch) {
  // Every 2^-14-th F32 bit pattern plus the patterns around each E4M3 value.
  for (uint64_t b = 0; b <= 0xffffffffull; b += 16411) {
    const float f = FromBits(static_cast<uint32_t>(b));
    ASSERT_EQ(F32ToE4M3(f), RefEncode(f)) << std::hex << b;
  }
  for (int c = 0; c < 0x7f; ++c) {
    const uint32_t center = Bits(std::max(E4M3ToF32(static_cast<uint8_t>(c)), 1e-7f));
    for (uint32_t d = 0; d < 4096; ++d) {
      for (uint32_t b : {center + d * 256, center - d * 256, center + d, center - d}) {
        const float f = FromBits(b);
        ASSERT_EQ(F32ToE4M3(f), RefEncode(f)) << std::hex << b;
        ASSERT_EQ(F32ToE4M3(-f), RefEncode(-f)) << std::hex << b;
      }
    }
  }
}

TEST(E8M0, DecodesEveryCode) {
  for (int e = 0; e < 255; ++e) {
    const float got = E8M0ToF32(static_cast<uint8_t>(e));
    EXPECT_EQ(static_cast<double>(got), std::ldexp(1.0, e - 127)) << e;
  }
  EXPECT_TRUE(std::isnan(E8M0ToF32(0xff)));
  EXPECT_EQ(E8M0ToF32(127), 1.f);
  EXPECT_EQ(E8M0ToF32(254), std::ldexp(1.f, 127));
  EXPECT_EQ(Bits(E8M0ToF32(0)), 0x00400000u);  // 2^-127: an F32 subnormal
  EXPECT_EQ(Bits(E8M0ToF32(1)), 0x00800000u);  // 2^-126: the smallest normal
}

TEST(E8M0, ConvertToF32HandlesBothFp8Types) {
  std::vector<uint8_t> codes(256);
  for (int c = 0; c < 256; ++c) codes[c] = static_cast<uint8_t>(c);
  std::vector<float> e4(256), e8(256);
  ConvertToF32(DType::kF8E4M3, codes.data(), e4.data(), 256);
  ConvertToF32(DType::kF8E8M0, codes.data(), e8.data(), 256);
  for (int c = 0; c < 256; ++c) {
    EXPECT_EQ(Bits(e4[c]), Bits(E4M3ToF32(codes[c]))) << c;
    EXPECT_EQ(Bits(e8[c]), Bits(E8M0ToF32(codes[c]))) << c;
  }
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
  EXPECT_EQ(DTypeName(DType::kF8E8M0), "F8_E8M0");
  auto parsed = ParseDType("F8_E4M3");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, DType::kF8E4M3);
}

TEST(E8M0ScaleFor, IsTheSmallestPowerOfTwoThatFits) {
  EXPECT_EQ(E8M0ScaleFor(0.f), 127);
  EXPECT_EQ(E8M0ScaleFor(448.f), 127);
  EXPECT_EQ(E8M0ScaleFor(std::nextafter(448.f, kInf)), 128);
  EXPECT_EQ(E8M0ScaleFor(896.f), 128);
  EXPECT_EQ(E8M0ScaleFor(224.f), 126);
  EXPECT_EQ(E8M0ScaleFor(std::nextafter(224.f, kInf)), 127);
  EXPECT_EQ(E8M0ScaleFor(1.f), 119);  // 1 / 2^-8 = 256 <= 448 < 512
  EXPECT_EQ(E8M0ScaleFor(std::numeric_limits<float>::max()), 247);
  EXPECT_EQ(E8M0ScaleFor(kInf), 0xff);
  EXPECT_EQ(E8M0ScaleFor(kNaN), 0xff);
  // 448 * 2^-127 is the largest amax of scale 0; anything smaller clamps to 0.
  const float lo = std::ldexp(448.f, -127);
  EXPECT_EQ(E8M0ScaleFor(lo), 0);
  EXPECT_EQ(E8M0ScaleFor(std::nextafter(lo, kInf)), 1);
  EXPECT_EQ(E8M0ScaleFor(1e-38f), 0);
  EXPECT_EQ(E8M0ScaleFor(std::numeric_limits<float>::denorm_min()), 0);
  // The rule on random magnitudes: amax / 2^k <= 448 < amax / 2^(k-1), or k at the clamp.
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t bits = rng() & 0x7fffffffu;
    if (bits >= 0x7f800000u || bits == 0) continue;
    const float amax = FromBits(bits);
    const int s = E8M0ScaleFor(amax);
    ASSERT_LE(s, 254);
    const int k = s - 127;
    ASSERT_LE(static_cast<double>(amax), 448.0 * std::ldexp(1.0, k)) << amax;
    if (s > 0) {
      ASSERT_GT(static_cast<double>(amax), 448.0 * std::ldexp(1.0, k - 1)) << amax;
    }
  }
}

// A random row: blocks of varied magnitudes (some tiny, some huge), some zeros.
std::vector<float> RandomRow(std::mt19937& rng, int64_t dim) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::uniform_int_distribution<int> mag(-140, 120);
  std::vector<float> x(dim);
  for (int64_t b = 0; b < dim / kFp8Block; ++b) {
    const int e = b % 4 == 0 ? 0 : mag(rng);
    for (int64_t i = 0; i < kFp8Block; ++i) {
      float v = std::ldexp(u(rng), e);
      if (rng() % 16 == 0) v = 0.f;
      if (rng() % 64 == 0) v = std::ldexp(u(rng), e - 20);  // deep in the subnormal range
      x[b * kFp8Block + i] = v;
    }
  }
  return x;
}

// |x - q| <= max(2^-4 |x|, 2^(k-10)) for the block's scale 2^k: E4M3 keeps 3 mantissa bits
// (half an ulp is at most 2^-4 of the value) down to 2^-6, below which the step is 2^-9; no
// scaled value exceeds 448, so none saturates.
void ExpectWithinBound(const float* x, const float* q, int64_t n, uint8_t scale) {
  const double step = std::ldexp(1.0, static_cast<int>(scale) - 127 - 10);
  for (int64_t i = 0; i < n; ++i) {
    const double err = std::fabs(static_cast<double>(x[i]) - q[i]);
    ASSERT_LE(err, std::max(std::fabs(static_cast<double>(x[i])) / 16, step))
        << "x=" << x[i] << " q=" << q[i] << " scale=" << int{scale};
    ASSERT_EQ(std::signbit(q[i]) && q[i] != 0, x[i] < 0 && q[i] != 0) << x[i];
  }
}

TEST(QuantizeFp8Row, RoundTripIsWithinHalfAnUlpOfEachValue) {
  std::mt19937 rng(11);
  for (int64_t dim : {32, 256, 1024}) {
    for (int rep = 0; rep < 200; ++rep) {
      const std::vector<float> x = RandomRow(rng, dim);
      std::vector<uint8_t> codes(dim), scales(dim / kFp8Block);
      QuantizeFp8Row(x.data(), dim, codes.data(), scales.data());
      std::vector<float> q(dim);
      DequantFp8Row(codes.data(), scales.data(), dim, q.data());
      for (int64_t b = 0; b < dim / kFp8Block; ++b) {
        float amax = 0;
        for (int64_t i = 0; i < kFp8Block; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
        ASSERT_EQ(scales[b], E8M0ScaleFor(amax));
        ExpectWithinBound(x.data() + b * 32, q.data() + b * 32, kFp8Block, scales[b]);
        // Each code is the nearest-even encoding of the scaled value.
        for (int64_t i = 0; i < kFp8Block; ++i) {
          const float scaled = std::ldexp(x[b * 32 + i], 127 - scales[b]);
          ASSERT_EQ(codes[b * 32 + i], RefEncode(scaled));
        }
      }
    }
  }
}

TEST(QuantizeFp8Row, ValuesOnTheGridComeBackExactly) {
  std::mt19937 rng(3);
  const int64_t dim = 512;
  for (int rep = 0; rep < 500; ++rep) {
    std::vector<uint8_t> codes(dim), scales(dim / kFp8Block);
    for (auto& s : scales) s = static_cast<uint8_t>(rng() % 241);  // finite: 448 * 2^113 fits
    for (int64_t i = 0; i < dim; ++i) {
      uint8_t c = static_cast<uint8_t>(rng());
      if (IsNanCode(c)) c = 0x80;
      codes[i] = c;
    }
    // One value of full magnitude per block makes the block's scale the one it was built with.
    for (int64_t b = 0; b < dim / kFp8Block; ++b)
      codes[b * kFp8Block + rng() % 32] = 0x7e | (rng() & 0x80);
    std::vector<float> x(dim);
    DequantFp8Row(codes.data(), scales.data(), dim, x.data());
    std::vector<uint8_t> codes2(dim), scales2(dim / kFp8Block);
    QuantizeFp8Row(x.data(), dim, codes2.data(), scales2.data());
    ASSERT_EQ(scales2, scales);
    ASSERT_EQ(codes2, codes);
    std::vector<float> y(dim);
    DequantFp8Row(codes2.data(), scales2.data(), dim, y.data());
    for (int64_t i = 0; i < dim; ++i) ASSERT_EQ(Bits(y[i]), Bits(x[i])) << i;
  }
}

TEST(QuantizeFp8Row, SpecialBlocks) {
  std::vector<float> x(128, 0.f);
  x[32 + 5] = kNaN;   // block 1: NaN
  x[64 + 9] = -kInf;  // block 2: inf
  x[96] = -0.f;       // block 3: signed zeros only
  x[97] = 3.0f;       // ... and a value
  x[0] = -0.f;        // block 0: all zeros
  std::vector<uint8_t> codes(128), scales(4);
  QuantizeFp8Row(x.data(), 128, codes.data(), scales.data());
  EXPECT_EQ(scales[0], 127);
  EXPECT_EQ(codes[0], 0x80);
  for (int i = 1; i < 32; ++i) EXPECT_EQ(codes[i], 0x00) << i;
  EXPECT_EQ(scales[1], 0xff);
  EXPECT_EQ(scales[2], 0xff);
  for (int i = 32; i < 96; ++i) EXPECT_EQ(codes[i], 0x7f) << i;
  EXPECT_EQ(scales[3], E8M0ScaleFor(3.f));
  EXPECT_EQ(codes[96], 0x80);
  std::vector<float> q(128);
  DequantFp8Row(codes.data(), scales.data(), 128, q.data());
  for (int i = 32; i < 96; ++i) EXPECT_TRUE(std::isnan(q[i])) << i;
  EXPECT_EQ(q[97], 3.f);
  // Tiny blocks use the smallest scale (2^-127) and keep what the subnormal grid allows.
  std::vector<float> tiny(32);
  for (int i = 0; i < 32; ++i) tiny[i] = std::ldexp(static_cast<float>(i % 8 + 1), -135);
  std::vector<uint8_t> tc(32), ts(1);
  QuantizeFp8Row(tiny.data(), 32, tc.data(), ts.data());
  EXPECT_EQ(ts[0], 0);
  std::vector<float> tq(32);
  DequantFp8Row(tc.data(), ts.data(), 32, tq.data());
  ExpectWithinBound(tiny.data(), tq.data(), 32, ts[0]);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(tq[i], tiny[i]) << i;  // 4 bits: on the grid
}

TEST(QuantizeFp8Tiles, RaggedShapesRoundTripWithinTheBound) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto [rows, cols] :
       {std::pair<int64_t, int64_t>{1, 1}, {31, 33}, {45, 70}, {64, 64}, {100, 7}, {3, 129}}) {
    const int64_t tr = (rows + 31) / 32, tc = (cols + 31) / 32;
    std::vector<float> w(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        // A magnitude per tile, so the tiles' scales differ.
        const int e = static_cast<int>((r / 32) * 7 + (c / 32) * 3) - 5;
        w[r * cols + c] = std::ldexp(u(rng), e);
      }
    }
    std::vector<uint8_t> codes(rows * cols), scales(tr * tc, 0xaa);
    QuantizeFp8Tiles(w.data(), rows, cols, codes.data(), scales.data());
    std::vector<float> q(rows * cols);
    DequantFp8Tiles(codes.data(), scales.data(), rows, cols, q.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const uint8_t s = scales[(r / 32) * tc + c / 32];
        ExpectWithinBound(&w[r * cols + c], &q[r * cols + c], 1, s);
      }
    }
    for (int64_t a = 0; a < tr; ++a) {
      for (int64_t b = 0; b < tc; ++b) {
        float amax = 0;
        for (int64_t r = a * 32; r < std::min(rows, a * 32 + 32); ++r) {
          for (int64_t c = b * 32; c < std::min(cols, b * 32 + 32); ++c) {
            amax = std::max(amax, std::fabs(w[r * cols + c]));
          }
        }
        EXPECT_EQ(scales[a * tc + b], E8M0ScaleFor(amax)) << rows << "x" << cols;
      }
    }
    // Quantizing the dequantized tiles again changes nothing.
    std::vector<uint8_t> codes2(rows * cols), scales2(tr * tc);
    QuantizeFp8Tiles(q.data(), rows, cols, codes2.data(), scales2.data());
    std::vector<float> q2(rows * cols);
    DequantFp8Tiles(codes2.data(), scales2.data(), rows, cols, q2.data());
    for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(Bits(q2[i]), Bits(q[i])) << i;
  }
  // A NaN poisons its tile only.
  std::vector<float> w(40 * 40, 1.f);
  w[3 * 40 + 35] = kNaN;  // tile (0, 1)
  std::vector<uint8_t> codes(40 * 40), scales(4);
  QuantizeFp8Tiles(w.data(), 40, 40, codes.data(), scales.data());
  EXPECT_EQ(scales[0], E8M0ScaleFor(1.f));
  EXPECT_EQ(scales[1], 0xff);
  EXPECT_EQ(scales[2], E8M0ScaleFor(1.f));
  EXPECT_EQ(scales[3], E8M0ScaleFor(1.f));
  EXPECT_EQ(codes[0 * 40 + 33], 0x7f);
  EXPECT_EQ(codes[39 * 40 + 39], F32ToE4M3(std::ldexp(1.f, 127 - scales[3])));
}

}  // namespace
}  // namespace engram
