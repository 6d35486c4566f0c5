// LRU order and TinyLFU admission on their own, then both behind a RowCache replaying a
// Zipf-like trace (hit rates printed; only algorithmic properties asserted).
#include "tiering/cache_policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "tiering/row_cache.h"

namespace engram {
namespace {

TEST(LruPolicy, VictimIsLeastRecentlyUsed) {
  LruPolicy lru(3);
  lru.OnInsert(0);
  lru.OnInsert(1);
  lru.OnInsert(2);
  EXPECT_EQ(lru.Victim(), 0u);
  lru.OnHit(0);
  EXPECT_EQ(lru.Victim(), 1u);
  lru.OnRemove(1);
  EXPECT_EQ(lru.Victim(), 2u);
  lru.OnInsert(1);
  lru.OnHit(2);
  EXPECT_EQ(lru.Victim(), 0u);
  EXPECT_TRUE(lru.Admit(7, 8));
}

TEST(FrequencySketch, EstimatesAndAges) {
  FrequencySketch sketch(16);  // ages after 160 increments
  for (int i = 0; i < 10; ++i) sketch.Increment(42);
  EXPECT_EQ(sketch.Estimate(42), 10u);
  EXPECT_EQ(sketch.Estimate(43), 0u);
  for (int i = 0; i < 20; ++i) sketch.Increment(42);
  EXPECT_EQ(sketch.Estimate(42), 15u);  // saturates
  for (uint64_t k = 1000; k < 1200; ++k) sketch.Increment(k);
  EXPECT_GE(sketch.agings(), 1u);
  EXPECT_LE(sketch.Estimate(42), 7u);  // halved
}

TEST(TinyLfuPolicy, AdmitsOnlyMoreFrequentKeys) {
  TinyLfuPolicy p(8);
  for (int i = 0; i < 5; ++i) p.RecordAccess(1);
  p.RecordAccess(2);
  EXPECT_FALSE(p.Admit(2, 1));  // 1 < 5
  EXPECT_TRUE(p.Admit(1, 2));
  EXPECT_FALSE(p.Admit(3, 4));  // equal (0, 0): keep the resident row
}

TEST(MakeCachePolicy, NamesAndRejectsUnknown) {
  EXPECT_EQ((*MakeCachePolicy("lru", 4))->name(), "lru");
  EXPECT_EQ((*MakeCachePolicy("tinylfu", 4))->name(), "tinylfu");
  auto bad = MakeCachePolicy("arc", 4);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("arc"), std::string::npos);
}

// Replays `trace` through a RowCache of `slots` 16-byte rows; returns the hit rate.
double HitRate(std::string_view policy, uint32_t slots, const std::vector<uint32_t>& trace) {
  constexpr size_t kRow = 16;
  auto cache = RowCache::Create(kRow, size_t{slots} * kRow, policy, PageRequest::kNormal);
  EXPECT_TRUE(cache.ok()) << cache.status().ToString();
  unsigned char row[kRow] = {};
  for (const uint32_t key : trace) {
    if ((*cache)->Lookup(0, key) == nullptr) (*cache)->Offer(0, key, row);
  }
  const auto& s = (*cache)->stats();
  return static_cast<double>(s.hits) / static_cast<double>(s.hits + s.misses);
}

TEST(CachePolicy, ZipfTraceHitRates) {
  constexpr uint32_t kKeys = 1'000'000;
  constexpr uint32_t kSlots = kKeys / 10;
  constexpr size_t kAccesses = 2'000'000;
  constexpr double kS = 1.0;
  std::vector<double> cdf(kKeys);
  double sum = 0;
  for (uint32_t i = 0; i < kKeys; ++i) cdf[i] = (sum += 1.0 / std::pow(i + 1.0, kS));
  std::mt19937_64 rng(2601);
  std::uniform_real_distribution<double> u(0.0, sum);
  // Ranks are scattered over the key space so that hot keys are not adjacent numbers.
  std::vector<uint32_t> perm(kKeys);
  for (uint32_t i = 0; i < kKeys; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<uint32_t> trace(kAccesses);
  for (auto& k : trace) {
    const auto rank = std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin();
    k = perm[std::min<size_t>(rank, kKeys - 1)];
  }
  const double lru = HitRate("lru", kSlots, trace);
  const double tinylfu = HitRate("tinylfu", kSlots, trace);
  std::printf(
      "Zipf s=%.1f over %u keys, %zu accesses, cache %u slots (10%%): hit rate lru %.4f, "
      "tinylfu %.4f\n",
      kS, kKeys, kAccesses, kSlots, lru, tinylfu);
  EXPECT_GT(lru, 0.0);
  EXPECT_LT(lru, 1.0);
  EXPECT_GT(tinylfu, 0.0);
  EXPECT_LT(tinylfu, 1.0);
  EXPECT_GE(tinylfu, lru - 0.02);
}

}  // namespace
}  // namespace engram
