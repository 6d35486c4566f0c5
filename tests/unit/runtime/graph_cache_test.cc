// The host-side bookkeeping of CUDA-graph decode steps: keys, warm-up, LRU eviction, epochs.
// Runs without a GPU (the graphs are stand-ins).
#include "runtime/graph_cache.h"

#include <gtest/gtest.h>

namespace engram {
namespace {

// Counts live stand-ins, so the tests see when the cache destroys a graph.
int live_graphs = 0;
class FakeGraph final : public CapturedGraph {
 public:
  FakeGraph() { ++live_graphs; }
  ~FakeGraph() override { --live_graphs; }
};

using State = GraphCache::Entry::State;

void Capture(GraphCache::Entry& e) {
  e.graph = std::make_unique<FakeGraph>();
  e.state = State::kGraph;
}

TEST(BlockTableBucket, PowersOfTwoThenMultiplesOf64) {
  EXPECT_EQ(BlockTableBucket(0), 4);
  EXPECT_EQ(BlockTableBucket(1), 4);
  EXPECT_EQ(BlockTableBucket(4), 4);
  EXPECT_EQ(BlockTableBucket(5), 8);
  EXPECT_EQ(BlockTableBucket(9), 16);
  EXPECT_EQ(BlockTableBucket(33), 64);
  EXPECT_EQ(BlockTableBucket(64), 64);
  EXPECT_EQ(BlockTableBucket(65), 128);
  EXPECT_EQ(BlockTableBucket(129), 192);
  EXPECT_EQ(BlockTableBucket(2048), 2048);
  for (int32_t b = 0; b < 5000; ++b) {
    const int32_t k = BlockTableBucket(b);
    ASSERT_GE(k, b);
    ASSERT_GE(k, BlockTableBucket(b > 0 ? b - 1 : 0)) << "not monotonic at " << b;
  }
}

TEST(GraphCache, KeysOnEveryField) {
  GraphCache c(8);
  const GraphKey a{3, 3, 8};
  EXPECT_EQ(c.Find(a), nullptr);
  c.Add(a);
  ASSERT_NE(c.Find(a), nullptr);
  EXPECT_EQ(c.Find(a)->state, State::kWarm);
  EXPECT_EQ(c.Find(GraphKey{4, 3, 8}), nullptr);
  EXPECT_EQ(c.Find(GraphKey{3, 2, 8}), nullptr);
  EXPECT_EQ(c.Find(GraphKey{3, 3, 16}), nullptr);
  EXPECT_EQ(c.size(), 1u);
}

TEST(GraphCache, EvictsTheLeastRecentlyUsed) {
  live_graphs = 0;
  {
    GraphCache c(3);
    for (int32_t b = 1; b <= 3; ++b) Capture(c.Add(GraphKey{b, b, 4}));
    EXPECT_EQ(live_graphs, 3);
    ASSERT_NE(c.Find(GraphKey{1, 1, 4}), nullptr);  // 1 is now the most recent; 2 the least
    c.Add(GraphKey{4, 4, 4});
    EXPECT_EQ(c.size(), 3u);
    EXPECT_EQ(c.evictions(), 1u);
    EXPECT_EQ(live_graphs, 2);  // 2's graph went with it
    EXPECT_EQ(c.Find(GraphKey{2, 2, 4}), nullptr);
    EXPECT_NE(c.Find(GraphKey{1, 1, 4}), nullptr);
    EXPECT_NE(c.Find(GraphKey{3, 3, 4}), nullptr);
    EXPECT_NE(c.Find(GraphKey{4, 4, 4}), nullptr);
    EXPECT_EQ(c.graphs(), 2);
  }
  EXPECT_EQ(live_graphs, 0);
}

TEST(GraphCache, NewEpochDropsGraphsButKeepsShapesWarm) {
  live_graphs = 0;
  GraphCache c(8);
  EXPECT_FALSE(c.SetEpoch(5));  // the first epoch is only recorded
  Capture(c.Add(GraphKey{1, 1, 4}));
  c.Add(GraphKey{2, 2, 4});
  c.Add(GraphKey{3, 3, 4}).state = State::kFailed;
  EXPECT_FALSE(c.SetEpoch(5));
  EXPECT_EQ(c.graphs(), 1);
  EXPECT_TRUE(c.SetEpoch(6));
  EXPECT_EQ(c.graphs(), 0);
  EXPECT_EQ(live_graphs, 0);
  EXPECT_EQ(c.invalidations(), 1u);
  ASSERT_NE(c.Find(GraphKey{1, 1, 4}), nullptr);
  EXPECT_EQ(c.Find(GraphKey{1, 1, 4})->state, State::kWarm);  // recaptured on its next step
  EXPECT_EQ(c.Find(GraphKey{1, 1, 4})->logits.data, nullptr);
  EXPECT_EQ(c.Find(GraphKey{3, 3, 4})->state, State::kFailed);
  EXPECT_EQ(c.size(), 3u);
  // Nothing to drop: not counted.
  EXPECT_TRUE(c.SetEpoch(7));
  EXPECT_EQ(c.invalidations(), 1u);
}

TEST(GraphCache, InvalidateDropsEveryGraph) {
  live_graphs = 0;
  GraphCache c(4);
  Capture(c.Add(GraphKey{1, 1, 4}));
  Capture(c.Add(GraphKey{2, 2, 8}));
  c.Invalidate();
  EXPECT_EQ(live_graphs, 0);
  EXPECT_EQ(c.graphs(), 0);
  EXPECT_EQ(c.size(), 2u);
  EXPECT_EQ(c.invalidations(), 1u);
}

}  // namespace
}  // namespace engram
