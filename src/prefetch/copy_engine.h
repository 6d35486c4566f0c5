// CopyEngine: moves the Engram rows a step needs from a TableTier into a staging slot while
// the forward pass runs the earlier layers, and hands them to the model at the Engram layer
// (it is the step's EngramRowSource). Per step:
//   Begin(row ids per Engram layer)   engine thread, right after hashing
//     copy thread: per layer, dedupe -> TableTier::ReadRows -> scatter into the slot -> ready
//   WaitRows(layer)                   engine thread, inside the forward at the Engram layer:
//     waits only for that layer (stall time measured), then Backend::GatherRows converts the
//     staged rows to F32 activations.
// Staging is a ring of two slots, so a step's rows may be fetched while the previous step's
// are still being read. In synchronous mode (prefetch off) there is no copy thread: WaitRows
// reads the rows itself, for comparison.
//
// Thread safety: Begin/WaitRows/End from the engine thread; stats() from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/backend.h"
#include "model/engram_rows.h"
#include "prefetch/overlap_stats.h"
#include "tiering/table_tier.h"

namespace engram {

class CopyEngine final : public EngramRowSource {
 public:
  // `tier` and `backend` must outlive the engine. heads = H per token.
  CopyEngine(TableTier& tier, Backend& backend, int heads, bool prefetch);
  ~CopyEngine() override;

  // Starts a step: rows[i] holds layer i's absolute row ids, [tokens, heads] row-major.
  // Returns at once with prefetch on (the copy thread works); does nothing more otherwise.
  Status Begin(std::vector<std::vector<int64_t>> rows, int64_t tokens);
  // EngramRowSource: layer i's rows as F32 [tokens, heads * Dh] on the backend's device.
  Result<Tensor> WaitRows(int layer) override;
  // Ends the step (waits for the copy thread to finish it) and adds its time to the stats.
  Status End(double step_seconds);

  OverlapStats stats() const;

 private:
  struct Slot;
  void CopyLoop();
  Status FetchLayer(Slot& slot, int layer);

  TableTier& tier_;
  Backend& backend_;
  const int heads_;
  const bool prefetch_;
  std::vector<std::unique_ptr<Slot>> slots_;  // the ring
  int current_ = 0;                           // slot of the step in progress
  Tensor identity_;                           // I64 [capacity, heads]: row t*H+h -> itself
  Tensor out_;                                // F32 [capacity, heads * Dh]

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;        // GUARDED_BY(mu_)
  Slot* pending_ = nullptr;  // GUARDED_BY(mu_): the slot the copy thread should fill
  OverlapStats stats_;       // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace engram
