// HotRowCache: slots per layer, admission through the cache policy, and never evicting a row
// the current step reads.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "prefetch/hot_row_cache.h"

namespace engram {
namespace {

TEST(HotRowCache, FillsFreeSlotsThenHits) {
  auto c = std::move(HotRowCache::Create(2, 3, "lru")).value();
  c->BeginStep();
  std::set<int64_t> slots;
  for (int64_t r : {10, 20, 30}) {
    EXPECT_EQ(c->Lookup(0, r), -1);
    const int64_t s = c->Admit(0, r);
    ASSERT_GE(s, 0);
    EXPECT_LT(s, 3);
    slots.insert(s);
  }
  EXPECT_EQ(slots.size(), 3u);
  EXPECT_EQ(c->Lookup(1, 10), -1) << "layers are separate";
  c->BeginStep();
  EXPECT_GE(c->Lookup(0, 20), 0);
  EXPECT_EQ(c->stats(0).hits, 1u);
  EXPECT_EQ(c->stats(0).lookups, 4u);
  EXPECT_EQ(c->stats(0).admitted, 3u);
}

TEST(HotRowCache, NeverEvictsARowTheStepReads) {
  auto c = std::move(HotRowCache::Create(1, 2, "lru")).value();
  c->BeginStep();
  const int64_t a = c->Admit(0, 1), b = c->Admit(0, 2);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  // Same step: both slots are in use, so a third row is declined.
  EXPECT_EQ(c->Admit(0, 3), -1);
  c->BeginStep();
  EXPECT_EQ(c->Lookup(0, 1), a);  // row 1 used by this step; row 2 is the LRU victim
  EXPECT_EQ(c->Admit(0, 3), b);   // evicts row 2, not row 1
  EXPECT_EQ(c->Lookup(0, 2), -1);
  EXPECT_EQ(c->Lookup(0, 1), a);
  EXPECT_EQ(c->stats(0).evicted, 1u);
}

TEST(HotRowCache, TinyLfuKeepsFrequentRowsAgainstOneOffs) {
  auto c = std::move(HotRowCache::Create(1, 8, "tinylfu")).value();
  std::mt19937_64 rng(3);
  uint64_t hot_hits = 0, hot_lookups = 0;
  for (int step = 0; step < 400; ++step) {
    c->BeginStep();
    // Rows 0..7 recur every step; each step also brings 8 rows never seen again.
    for (int64_t r = 0; r < 8; ++r) {
      ++hot_lookups;
      if (c->Lookup(0, r) >= 0) {
        ++hot_hits;
      } else {
        c->Admit(0, r);
      }
    }
    for (int k = 0; k < 8; ++k) {
      const int64_t r = 1000 + static_cast<int64_t>(rng() % 1000000);
      if (c->Lookup(0, r) < 0) c->Admit(0, r);
    }
  }
  EXPECT_GT(static_cast<double>(hot_hits) / static_cast<double>(hot_lookups), 0.9);
}

TEST(HotRowCache, ForgetAndClearFreeSlots) {
  auto c = std::move(HotRowCache::Create(1, 1, "tinylfu")).value();
  c->BeginStep();
  const int64_t s = c->Admit(0, 5);
  ASSERT_EQ(s, 0);
  c->Forget(0, 5);
  EXPECT_EQ(c->Lookup(0, 5), -1);
  EXPECT_EQ(c->Admit(0, 6), 0) << "the forgotten slot is free again";
  c->Clear();
  EXPECT_EQ(c->Lookup(0, 6), -1);
  EXPECT_EQ(c->Admit(0, 7), 0);
}

TEST(HotRowCache, BadArgumentsAreRefused) {
  EXPECT_EQ(HotRowCache::Create(0, 4, "lru").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HotRowCache::Create(1, 0, "lru").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(HotRowCache::Create(1, 4, "fifo").status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace engram
