// Scheduler: the batching policy. Continuous (iteration-level) batching with chunked
// prefill: every step runs one decode token for each running sequence, then fills the
// remaining token budget with prompt chunks, oldest first. Sequences are admitted from a
// bounded FIFO queue when a sequence slot is free and the KV cache can hold the whole
// request (prompt + max_tokens), so a running sequence never fails for lack of blocks and
// nothing is preempted. Head-of-line admission: no request is overtaken, so none starves.
//
// Thread safety: used by the engine thread only. Pure policy: it knows nothing of the model.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "common/status.h"

namespace engram {

struct SchedulerLimits {
  int max_running_seqs = 64;
  int max_batch_tokens = 2048;
  int prefill_chunk_tokens = 512;
  int max_waiting = 256;
  int kv_blocks = 4096;  // KV capacity in blocks
  int kv_block_size = 16;
};

// What the scheduler tracks of a request; the engine loop owns the rest.
struct SchedItem {
  uint64_t key = 0;  // the loop's handle for the request
  int prompt_len = 0;
  int max_tokens = 0;
  int prefilled = 0;  // prompt tokens already run
  int kv_blocks = 0;  // reserved at admission
};

struct PlannedChunk {
  uint64_t key = 0;
  int prompt_begin = 0;  // for prefill: first prompt index; -1 for a decode token
  int num_tokens = 0;
  bool last_prompt_chunk = false;  // logits wanted (prefill that completes, or decode)
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerLimits& limits) : limits_(limits) {}

  // Queues a request; RESOURCE_EXHAUSTED when max_waiting are already waiting, and
  // OUT_OF_RANGE when it could never fit the KV cache even alone.
  Status Enqueue(const SchedItem& item);
  // Moves waiting requests to running while a slot and their KV reservation fit (FIFO).
  // Returns the keys admitted, in order.
  std::vector<uint64_t> Admit();
  // The next step's chunks (empty when nothing runs).
  std::vector<PlannedChunk> Plan();
  // Records that a planned step ran.
  void Commit(const std::vector<PlannedChunk>& chunks);
  // Forgets a request (finished, cancelled or failed), waiting or running; frees its
  // reservation.
  void Remove(uint64_t key);

  int running() const { return static_cast<int>(running_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  int reserved_blocks() const { return reserved_blocks_; }
  const SchedulerLimits& limits() const { return limits_; }
  // Blocks a request of this size reserves.
  int BlocksFor(int prompt_len, int max_tokens) const;

 private:
  SchedulerLimits limits_;
  std::deque<SchedItem> waiting_;
  std::vector<SchedItem> running_;  // in admission order
  int reserved_blocks_ = 0;
};

}  // namespace engram
