// The batching policy: decode first, chunked prefill within the token budget, FIFO
// admission bounded by sequence slots and KV reservation, a bounded queue.
#include "runtime/scheduler.h"

#include <gtest/gtest.h>

namespace engram {
namespace {

SchedulerLimits Limits() {
  SchedulerLimits l;
  l.max_running_seqs = 2;
  l.max_batch_tokens = 10;
  l.prefill_chunk_tokens = 4;
  l.max_waiting = 3;
  l.kv_blocks = 8;
  l.kv_block_size = 4;
  return l;
}

SchedItem Item(uint64_t key, int prompt, int max_tokens) {
  SchedItem it;
  it.key = key;
  it.prompt_len = prompt;
  it.max_tokens = max_tokens;
  return it;
}

TEST(Scheduler, ChunksPromptsAndDecodesFirst) {
  Scheduler s(Limits());
  ASSERT_TRUE(s.Enqueue(Item(1, 6, 2)).ok());
  ASSERT_EQ(s.Admit(), std::vector<uint64_t>{1});
  auto plan = s.Plan();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].prompt_begin, 0);
  EXPECT_EQ(plan[0].num_tokens, 4);  // prefill_chunk_tokens
  EXPECT_FALSE(plan[0].last_prompt_chunk);
  s.Commit(plan);
  plan = s.Plan();
  EXPECT_EQ(plan[0].prompt_begin, 4);
  EXPECT_EQ(plan[0].num_tokens, 2);
  EXPECT_TRUE(plan[0].last_prompt_chunk);
  s.Commit(plan);
  // A second request arrives: the first decodes, the second's prompt fills the budget.
  ASSERT_TRUE(s.Enqueue(Item(2, 20, 4)).ok());
  EXPECT_EQ(s.Admit(), std::vector<uint64_t>{2});  // 2 + 6 blocks reserved of 8
  plan = s.Plan();
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].key, 1u);
  EXPECT_EQ(plan[0].prompt_begin, -1);  // decode token first
  EXPECT_TRUE(plan[0].last_prompt_chunk);
  EXPECT_EQ(plan[1].key, 2u);
  EXPECT_EQ(plan[1].num_tokens, 4);
}

TEST(Scheduler, AdmissionReservesKvForPromptPlusMaxTokens) {
  Scheduler s(Limits());                        // 8 blocks of 4 positions
  ASSERT_TRUE(s.Enqueue(Item(1, 10, 6)).ok());  // 16 positions = 4 blocks
  ASSERT_TRUE(s.Enqueue(Item(2, 12, 6)).ok());  // 18 positions = 5 blocks: must wait
  ASSERT_TRUE(s.Enqueue(Item(3, 1, 1)).ok());   // would fit, but FIFO: no overtaking
  EXPECT_EQ(s.Admit(), std::vector<uint64_t>{1});
  EXPECT_EQ(s.reserved_blocks(), 4);
  EXPECT_EQ(s.waiting(), 2);
  s.Remove(1);
  EXPECT_EQ(s.reserved_blocks(), 0);
  EXPECT_EQ(s.Admit(), (std::vector<uint64_t>{2, 3}));
}

TEST(Scheduler, RunningSlotsBoundAdmission) {
  Scheduler s(Limits());
  for (uint64_t k = 1; k <= 3; ++k) ASSERT_TRUE(s.Enqueue(Item(k, 1, 1)).ok());
  EXPECT_EQ(s.Admit().size(), 2u);
  EXPECT_EQ(s.running(), 2);
  EXPECT_EQ(s.waiting(), 1);
}

TEST(Scheduler, FullQueueIsResourceExhausted) {
  Scheduler s(Limits());
  for (uint64_t k = 1; k <= 3; ++k) ASSERT_TRUE(s.Enqueue(Item(k, 1, 1)).ok());
  Status st = s.Enqueue(Item(4, 1, 1));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("max_waiting"), std::string::npos) << st.message();
}

TEST(Scheduler, RequestLargerThanTheKvCacheIsOutOfRange) {
  Scheduler s(Limits());
  Status st = s.Enqueue(Item(1, 30, 10));  // 40 positions > 32
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("kv_tokens"), std::string::npos) << st.message();
}

TEST(Scheduler, TokenBudgetCapsAStep) {
  SchedulerLimits l = Limits();
  l.max_running_seqs = 4;
  l.max_waiting = 8;
  l.kv_blocks = 100;
  Scheduler s(l);
  for (uint64_t k = 1; k <= 4; ++k) ASSERT_TRUE(s.Enqueue(Item(k, 4, 4)).ok());
  s.Admit();
  auto plan = s.Plan();
  int tokens = 0;
  for (const auto& c : plan) tokens += c.num_tokens;
  EXPECT_EQ(tokens, 10);  // max_batch_tokens
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[2].num_tokens, 2);  // the third prompt gets what is left
  s.Commit(plan);
  plan = s.Plan();  // 1 and 2 decode; 3 finishes its prompt; 4 starts
  ASSERT_GE(plan.size(), 3u);
  EXPECT_EQ(plan[0].prompt_begin, -1);
  EXPECT_EQ(plan[1].prompt_begin, -1);
  EXPECT_EQ(plan[2].key, 3u);
  EXPECT_EQ(plan[2].prompt_begin, 2);
}

}  // namespace
}  // namespace engram
