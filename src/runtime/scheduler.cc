#include "runtime/scheduler.h"

#include <algorithm>

namespace engram {

int Scheduler::BlocksFor(int prompt_len, int max_tokens) const {
  const int positions = prompt_len + max_tokens;
  return (positions + limits_.kv_block_size - 1) / limits_.kv_block_size;
}

Status Scheduler::Enqueue(const SchedItem& item) {
  if (static_cast<int>(waiting_.size()) >= limits_.max_waiting) {
    return ResourceExhausted(
        "the wait queue is full ({} requests waiting, limits.max_waiting = {})", waiting_.size(),
        limits_.max_waiting);
  }
  SchedItem it = item;
  it.kv_blocks = BlocksFor(item.prompt_len, item.max_tokens);
  if (it.kv_blocks > limits_.kv_blocks) {
    return OutOfRange(
        "prompt ({} tokens) + max_tokens ({}) needs {} KV positions, more than the "
        "server's KV cache holds ({} = limits.kv_tokens)",
        item.prompt_len, item.max_tokens,
        static_cast<int64_t>(it.kv_blocks) * limits_.kv_block_size,
        static_cast<int64_t>(limits_.kv_blocks) * limits_.kv_block_size);
  }
  waiting_.push_back(it);
  return Status::Ok();
}

std::vector<uint64_t> Scheduler::Admit() {
  std::vector<uint64_t> admitted;
  while (!waiting_.empty() && static_cast<int>(running_.size()) < limits_.max_running_seqs &&
         reserved_blocks_ + waiting_.front().kv_blocks <= limits_.kv_blocks) {
    reserved_blocks_ += waiting_.front().kv_blocks;
    running_.push_back(waiting_.front());
    admitted.push_back(waiting_.front().key);
    waiting_.pop_front();
  }
  return admitted;
}

std::vector<PlannedChunk> Scheduler::Plan() {
  std::vector<PlannedChunk> plan;
  int budget = limits_.max_batch_tokens;
  // Decode first: one token for every sequence past its prompt (latency of running streams).
  for (const SchedItem& s : running_) {
    if (s.prefilled < s.prompt_len || budget == 0) continue;
    plan.push_back({s.key, -1, 1, true});
    --budget;
  }
  // Then prompt chunks, oldest admitted first.
  for (const SchedItem& s : running_) {
    if (s.prefilled >= s.prompt_len || budget == 0) continue;
    const int n = std::min({s.prompt_len - s.prefilled, limits_.prefill_chunk_tokens, budget});
    plan.push_back({s.key, s.prefilled, n, s.prefilled + n == s.prompt_len});
    budget -= n;
  }
  return plan;
}

void Scheduler::Commit(const std::vector<PlannedChunk>& chunks) {
  for (const PlannedChunk& c : chunks) {
    if (c.prompt_begin < 0) continue;
    for (SchedItem& s : running_) {
      if (s.key == c.key) s.prefilled += c.num_tokens;
    }
  }
}

void Scheduler::Remove(uint64_t key) {
  for (auto it = running_.begin(); it != running_.end(); ++it) {
    if (it->key == key) {
      reserved_blocks_ -= it->kv_blocks;
      running_.erase(it);
      return;
    }
  }
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
    if (it->key == key) {
      waiting_.erase(it);
      return;
    }
  }
}

}  // namespace engram
