#include "tiering/row_cache.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace engram {
namespace {

std::vector<unsigned char> Row(size_t bytes, int v) {
  return std::vector<unsigned char>(bytes, static_cast<unsigned char>(v));
}

TEST(RowCache, CapacityIsBytesOverRowBytes) {
  auto cache = RowCache::Create(64, 64 * 10 + 63, "lru", PageRequest::kNormal);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  EXPECT_EQ((*cache)->capacity(), 10u);
  EXPECT_GE((*cache)->resident_bytes(), 640u);
  for (int r = 0; r < 25; ++r) {
    auto row = Row(64, r);
    EXPECT_EQ((*cache)->Lookup(1, r), nullptr);
    EXPECT_TRUE((*cache)->Offer(1, r, row.data()));
  }
  EXPECT_EQ((*cache)->size(), 10u);
  EXPECT_EQ((*cache)->stats().evicted, 15u);
}

TEST(RowCache, ZeroCapacityCachesNothing) {
  auto cache = RowCache::Create(64, 10, "tinylfu");
  ASSERT_TRUE(cache.ok());
  auto row = Row(64, 1);
  EXPECT_FALSE((*cache)->Offer(0, 1, row.data()));
  EXPECT_EQ((*cache)->Lookup(0, 1), nullptr);
  EXPECT_EQ((*cache)->resident_bytes(), 0u);
}

TEST(RowCache, RejectsBadArguments) {
  EXPECT_EQ(RowCache::Create(0, 100, "lru").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(RowCache::Create(8, 100, "fifo").status().code(), StatusCode::kInvalidArgument);
}

TEST(RowCache, LruEvictsLeastRecentlyUsedAndKeepsBytes) {
  auto made = RowCache::Create(32, 32 * 3, "lru", PageRequest::kNormal);
  ASSERT_TRUE(made.ok());
  RowCache& c = **made;
  for (int r = 0; r < 3; ++r) c.Offer(0, r, Row(32, r).data());
  ASSERT_NE(c.Lookup(0, 0), nullptr);  // 0 becomes most recent; 1 is the victim
  EXPECT_TRUE(c.Offer(0, 3, Row(32, 3).data()));
  EXPECT_FALSE(c.Contains(0, 1));
  EXPECT_TRUE(c.Contains(0, 0));
  EXPECT_TRUE(c.Contains(0, 2));
  const void* p = c.Lookup(0, 3);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(std::memcmp(p, Row(32, 3).data(), 32), 0);
  p = c.Lookup(0, 0);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(std::memcmp(p, Row(32, 0).data(), 32), 0);
  // Layers are separate keys.
  EXPECT_EQ(c.Lookup(1, 0), nullptr);
}

TEST(RowCache, TinyLfuKeepsFrequentRowsAgainstAScan) {
  auto made = RowCache::Create(16, 16 * 4, "tinylfu", PageRequest::kNormal);
  ASSERT_TRUE(made.ok());
  RowCache& c = **made;
  auto row = Row(16, 7);
  // Rows 0..3 are hot: looked up several times and cached.
  for (int rep = 0; rep < 4; ++rep) {
    for (int r = 0; r < 4; ++r) {
      if (c.Lookup(0, r) == nullptr) c.Offer(0, r, row.data());
    }
  }
  // A scan of one-off rows is refused admission.
  for (int r = 100; r < 130; ++r) {  // 30 rows: no aging yet (64 increments)
    ASSERT_EQ(c.Lookup(0, r), nullptr);
    EXPECT_FALSE(c.Offer(0, r, row.data()));
  }
  for (int r = 0; r < 4; ++r) EXPECT_TRUE(c.Contains(0, r));
  EXPECT_EQ(c.stats().rejected, 30u);
  // A row that becomes more frequent than the victim gets in.
  for (int i = 0; i < 8; ++i) ASSERT_EQ(c.Lookup(0, 500), nullptr);
  EXPECT_TRUE(c.Offer(0, 500, row.data()));
  EXPECT_TRUE(c.Contains(0, 500));
}

}  // namespace
}  // namespace engram
