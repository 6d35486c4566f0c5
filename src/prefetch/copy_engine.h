// CopyEngine: moves the Engram rows a step needs from a TableTier to the backend's device while
// the forward pass runs the earlier layers, and hands them to the model at the Engram layer (it
// is the step's EngramRowSource). Per step:
//   Begin(row ids per Engram layer)          engine thread, right after hashing
//     copy thread, per layer: dedupe -> device hot-row cache lookup -> the misses into this
//     slot's region of the layer's device arena -> admit some to the hot cache -> upload the
//     step's (token, head) -> arena index -> RowChannel::Mark -> ready
//   WaitRows(layer)                          engine thread, inside the forward at the layer:
//     waits only for that layer (RowChannel::EndWait; stall measured there), then
//     Backend::GatherRows(arena, index) converts the rows to F32 activations.
//   End()                                    reads the stall times, reports unreadable rows.
//
// Transfer modes (how misses reach the arena):
//   kCopy:     TableTier::ReadRows into pinned host staging, then RowChannel::Upload (CUDA:
//              cudaMemcpyAsync on the copy stream). Any tier. On the CPU backend the arena is
//              host memory, so ReadRows writes into it directly.
//   kZeroCopy: the miss ids are uploaded and RowChannel::Gather reads the rows in place from the
//              tier's host table (CUDA: mapped pinned memory read over the bus by a kernel).
//              Needs a tier with HostTable() (dram).
// Staging is a ring of two slots (host buffers and arena regions), so a step's rows may be
// fetched while the previous step's are still being read. The hot region of the arena is shared
// by the steps; HotRowCache never evicts a row the current step reads, and steps do not overlap
// on the device (Engine::Step ends before the next Begin). In synchronous mode (prefetch off)
// there is no copy thread: WaitRows fetches the layer itself, for comparison.
//
// Thread safety: Begin/WaitRows/End from the engine thread; stats() from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kernels/backend.h"
#include "model/engram_rows.h"
#include "prefetch/hot_row_cache.h"
#include "prefetch/overlap_stats.h"
#include "tiering/table_tier.h"

namespace engram {

enum class TransferMode : uint8_t { kCopy, kZeroCopy };

struct CopyEngineOptions {
  bool prefetch = true;  // false: rows fetched at the layer (synchronous, for comparison)
  TransferMode transfer = TransferMode::kCopy;
  // Device hot-row cache, split evenly over the Engram layers; 0 = none.
  uint64_t hot_cache_bytes = 0;
  std::string hot_cache_policy = "tinylfu";  // "tinylfu" | "lru"
};

// A token whose Engram rows could not be read (its request must end; the others continue).
struct RowFailure {
  int64_t token = 0;  // index in the step's token order
  Status status;      // UNAVAILABLE naming the table, file, offset and cause
};

class CopyEngine final : public EngramRowSource {
 public:
  // `tier` and `backend` must outlive the engine. heads = H per token. INVALID_ARGUMENT for
  // kZeroCopy with a tier that has no host table, or a bad hot cache policy.
  static Result<std::unique_ptr<CopyEngine>> Create(TableTier& tier, Backend& backend, int heads,
                                                    const CopyEngineOptions& options);
  ~CopyEngine() override;

  // Starts a step: rows[i] holds layer i's absolute row ids, [tokens, heads] row-major.
  // Returns at once with prefetch on (the copy thread works); does nothing more otherwise.
  // OUT_OF_RANGE for a row outside its table.
  Status Begin(std::vector<std::vector<int64_t>> rows, int64_t tokens);
  // EngramRowSource: layer i's rows as F32 [tokens, heads * Dh] on the backend's device. Rows
  // that could not be read are zero here and reported by End.
  Result<Tensor> WaitRows(int layer) override;
  // Ends the step (waits for the copy thread to finish it), adds its time to the stats and
  // appends the tokens whose rows could not be read to *failures (one entry per token).
  Status End(double step_seconds, std::vector<RowFailure>* failures);

  OverlapStats stats() const;

 private:
  struct Slot;
  CopyEngine(TableTier& tier, Backend& backend, int heads, const CopyEngineOptions& options);
  void CopyLoop();
  // IssueLayer starts layer's fetch and, with prefetch, hands it to compute (the device waits
  // for its mark); FinishLayer waits for the rows to land and records the layer's stats.
  // FetchLayer is both, for synchronous mode.
  void IssueLayer(Slot& slot, int layer);
  Status FinishLayer(Slot& slot, int layer);
  Status FetchLayer(Slot& slot, int layer);
  Status Grow(int64_t tokens);
  int MarkOf(int slot, int layer) const { return slot * tier_.num_layers() + layer; }

  TableTier& tier_;
  Backend& backend_;
  const int heads_;
  const CopyEngineOptions options_;
  const bool host_device_;  // the backend's device is host memory: rows land in place
  std::unique_ptr<RowChannel> channel_;
  std::unique_ptr<HotRowCache> hot_;  // null without a hot cache; copy thread only
  int64_t hot_slots_ = 0;             // per layer
  int64_t capacity_ = 0;              // tokens per step the buffers hold
  std::vector<Tensor> arena_;         // per layer, device: [hot | slot 0 region | slot 1 region]
  std::vector<std::unique_ptr<Slot>> slots_;  // the ring
  int current_ = 0;                           // slot of the step in progress
  Tensor out_;                                // F32 [capacity, heads * Dh]

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;        // GUARDED_BY(mu_)
  Slot* pending_ = nullptr;  // GUARDED_BY(mu_): the slot the copy thread should fill
  OverlapStats stats_;       // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace engram
