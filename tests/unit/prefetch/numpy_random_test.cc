// Known-answer tests of the numpy generator reproduction. Every expected value below comes
// from numpy itself (its test data, its documentation) or from the Engram reference fixture;
// the source is named beside each.
#include "prefetch/numpy_random.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <limits>
#include <vector>

namespace engram::numpy_random {
namespace {

// numpy/random/tests/test_seed_sequence.py, test_reference_data (the first three rows): the
// pool of SeedSequence(seed) through generate_state(4) and generate_state(2, np.uint64).
TEST(SeedSequence, MatchesNumpyReferenceData) {
  const std::vector<std::vector<uint32_t>> inputs = {
      {3735928559u, 195939070u, 229505742u, 305419896u},
      {3668361503u, 4165561550u, 1661411377u, 3634257570u},
      {164546577u, 4166754639u, 1765190214u, 1303880213u},
  };
  const std::vector<std::array<uint32_t, 4>> outputs = {
      {3914649087u, 576849849u, 3593928901u, 2229911004u},
      {2240804226u, 3691353228u, 1365957195u, 2654016646u},
      {3562296087u, 3191708229u, 1147942216u, 3726991905u},
  };
  const std::vector<std::array<uint64_t, 2>> outputs64 = {
      {2477551240072187391ull, 9577394838764454085ull},
      {15854241394484835714ull, 11398914698975566411ull},
      {13708282465491374871ull, 16007308345579681096ull},
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    SeedSequence ss(inputs[i]);
    std::array<uint32_t, 4> state{};
    ss.GenerateState32(state);
    EXPECT_EQ(state, outputs[i]) << "row " << i;
    std::array<uint64_t, 2> state64{};
    ss.GenerateState64(state64);
    EXPECT_EQ(state64, outputs64[i]) << "row " << i;
  }
}

// numpy's _coerce_to_uint32_array docstring: 0x10deadbeef -> [3735928559, 16]; 0 -> [0].
TEST(SeedSequence, SplitsIntegersIntoLowFirstWords) {
  EXPECT_EQ(IntToWords(0, 0), (std::vector<uint32_t>{0u}));
  EXPECT_EQ(IntToWords(0, 0x10deadbeefull), (std::vector<uint32_t>{3735928559u, 16u}));
  EXPECT_EQ(IntToWords(0, 12345), (std::vector<uint32_t>{12345u}));
  EXPECT_EQ(IntToWords(0, 0x7FFFFFFFFFFFFFFFull),
            (std::vector<uint32_t>{0xFFFFFFFFu, 0x7FFFFFFFu}));
  EXPECT_EQ(IntToWords(1, 0), (std::vector<uint32_t>{0u, 0u, 1u}));
  // FromInt is SeedSequence over those words, also for seeds >= 2^32.
  const uint64_t big = 0x7FFFFFFFFFFFFFFFull;
  const std::vector<uint32_t> words = IntToWords(0, big);
  EXPECT_EQ(SeedSequence::FromInt(big).pool(), SeedSequence(words).pool());
}

// numpy/random/tests/data/pcg64-testset-1.csv at numpy commit 12f02376b3c0, written by
// src/pcg64/pcg64-test-data-gen.c of that commit: pcg64_srandom_r(state = 0xDEADBEAF,
// seq = 0) then pcg64_random_r. This checks the raw LCG + XSL-RR core and its seeding step.
TEST(Pcg64, MatchesNumpyRawTestData) {
  Pcg64 pcg(0, 0xDEADBEAFull, 0, 0);
  const std::vector<uint64_t> expected = {0xb174ddf3fe597da6ull, 0xfc217240c1e61e6full,
                                          0x20279da26fec9cbfull, 0xa5f4ee34651f4e1eull,
                                          0xb254d7901c68b9dbull, 0x6bf2a64e4052c36full};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(pcg.Next64(), expected[i]) << i;
  for (size_t i = expected.size(); i < 100; ++i) pcg.Next64();
  EXPECT_EQ(pcg.Next64(), 0x7a1db9118f60dee0ull);  // row 100
}

TEST(Pcg64, Next32ReturnsLowHalfThenHighHalf) {
  Pcg64 a = Pcg64::FromSeedSequence(SeedSequence::FromInt(7));
  Pcg64 b = Pcg64::FromSeedSequence(SeedSequence::FromInt(7));
  for (int i = 0; i < 4; ++i) {
    const uint64_t v = b.Next64();
    EXPECT_EQ(a.Next32(), static_cast<uint32_t>(v));
    EXPECT_EQ(a.Next32(), static_cast<uint32_t>(v >> 32));
  }
}

// numpy's default_rng docstring (numpy/random/_generator.pyx): default_rng(12345).random()
// is 0.22733602246716966; a fresh default_rng(12345).integers(low=0, high=10, size=3) is
// [6, 2, 7] (the 32-bit Lemire path over buffered 32-bit halves).
TEST(Generator, MatchesNumpyDocstringSeed12345) {
  Generator g = Generator::DefaultRng(12345);
  EXPECT_EQ(g.Random(), 0.22733602246716966);

  Generator h = Generator::DefaultRng(12345);
  auto ints = h.Integers(0, 10, 3);
  ASSERT_TRUE(ints.ok()) << ints.status().ToString();
  EXPECT_EQ(*ints, (std::vector<int64_t>{6, 2, 7}));
}

// Same docstring: default_rng(seed=42).random((3, 3)) printed to 8 digits.
TEST(Generator, MatchesNumpyDocstringSeed42) {
  Generator g = Generator::DefaultRng(42);
  const double expected[] = {0.77395605, 0.43887844, 0.85859792, 0.69736803, 0.09417735,
                             0.97562235, 0.7611397,  0.78606431, 0.12811363};
  for (double e : expected) EXPECT_NEAR(g.Random(), e, 5e-9);
}

// tests/data/demo_default_config.json (the Engram reference fixture): multipliers
// 2 * r + 1 with r = default_rng(seed).integers(0, half_bound, 3, np.int64), half_bound =
// (INT64_MAX // 98627) // 2, for seeds 10007 (layer 1) and 150105 (layer 15). This is the
// 64-bit Lemire path.
TEST(Generator, MatchesEngramFixtureMultipliers) {
  const int64_t half_bound = (std::numeric_limits<int64_t>::max() / 98627) / 2;
  const std::vector<std::pair<uint64_t, std::vector<int64_t>>> cases = {
      {10007, {76993395940407, 4862694818241, 36129212583461}},
      {150105, {29055444938695, 56284491166079, 54183298291715}},
  };
  for (const auto& [seed, multipliers] : cases) {
    Generator g = Generator::DefaultRng(seed);
    auto r = g.Integers(0, half_bound, 3);
    ASSERT_TRUE(r.ok());
    for (size_t k = 0; k < 3; ++k) EXPECT_EQ(2 * (*r)[k] + 1, multipliers[k]) << seed << " " << k;
  }
}

TEST(Generator, SingleValueRangeReturnsLowWithoutDrawing) {
  Generator g = Generator::DefaultRng(3);
  auto r = g.Integers(-5, -4, 4);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, (std::vector<int64_t>{-5, -5, -5, -5}));
  Generator fresh = Generator::DefaultRng(3);
  EXPECT_EQ(g.bit_generator().Next64(), fresh.bit_generator().Next64());
}

TEST(Generator, RejectsEmptyRange) {
  Generator g = Generator::DefaultRng(0);
  auto r = g.Integers(5, 5, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(g.Integers(6, 5, 1).ok());
}

TEST(Generator, ValuesStayInRangeOnEveryPath) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const std::vector<std::pair<int64_t, int64_t>> ranges = {
      {0, 2},                       // 32-bit Lemire, tiny range
      {-100, 100},                  // negative low
      {0, (int64_t{1} << 32) - 1},  // largest 32-bit Lemire range
      {7, (int64_t{1} << 32) + 7},  // rng == 2^32 - 1: raw 32-bit draws
      {0, (int64_t{1} << 32) + 1},  // smallest 64-bit Lemire range
      {0, kMax},                    // large 64-bit range
      {kMin, kMax},                 // rng = 2^64 - 2
  };
  for (const auto& [low, high] : ranges) {
    Generator g = Generator::DefaultRng(99);
    auto r = g.Integers(low, high, 1000);
    ASSERT_TRUE(r.ok());
    bool all_equal = true;
    for (int64_t v : *r) {
      ASSERT_GE(v, low);
      ASSERT_LT(v, high);
      all_equal = all_equal && v == (*r)[0];
    }
    EXPECT_FALSE(all_equal) << low << " " << high;
  }
}

TEST(Generator, SameSeedSameStream) {
  Generator a = Generator::DefaultRng(0x123456789ull);
  Generator b = Generator::DefaultRng(0x123456789ull);
  auto x = a.Integers(0, 1000000, 64);
  auto y = b.Integers(0, 1000000, 64);
  ASSERT_TRUE(x.ok() && y.ok());
  EXPECT_EQ(*x, *y);
  Generator c = Generator::DefaultRng(0x12345678Aull);
  auto z = c.Integers(0, 1000000, 64);
  ASSERT_TRUE(z.ok());
  EXPECT_NE(*x, *z);
}

}  // namespace
}  // namespace engram::numpy_random
