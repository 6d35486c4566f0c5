// HotRowCache: which Engram rows the device-side hot cache holds (HBM on the CUDA backend, an
// arena of its own in host memory on the CPU backend), so the most frequent rows skip the host
// tier and the bus. Index only: the copy engine owns the arena and moves the rows; this class
// maps (layer, row) -> slot in [0, slots_per_layer) and lets a CachePolicy per layer
// (tiering/cache_policy.h: TinyLFU admission by default, plain LRU for comparison) decide which
// rows stay.
//
// Rows a step reads from the arena must not be overwritten before the step ends: BeginStep()
// opens a step, Lookup marks a hit as used by it, and Admit never evicts a row used by the
// current step (it declines instead).
//
// Thread safety: none; the copy engine's copy thread owns it.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "tiering/cache_policy.h"

namespace engram {

struct HotRowStats {
  uint64_t lookups = 0, hits = 0;
  uint64_t admitted = 0, evicted = 0;
};

class HotRowCache {
 public:
  // INVALID_ARGUMENT for layers < 1, slots_per_layer < 1 or an unknown policy.
  static Result<std::unique_ptr<HotRowCache>> Create(int layers, uint32_t slots_per_layer,
                                                     std::string_view policy);

  void BeginStep() { ++step_; }
  // The slot holding (layer, row), or -1; records the access with the layer's policy.
  int64_t Lookup(int layer, int64_t row);
  // For a row that missed in this step: the slot it is to be written to (the mapping is made
  // now; its previous row is forgotten), or -1 when the policy declines or the victim is in
  // use by this step.
  int64_t Admit(int layer, int64_t row);
  // Drops (layer, row) (e.g. its data could not be read); no-op when absent.
  void Forget(int layer, int64_t row);
  // Drops every row (e.g. the arena was reallocated).
  void Clear();

  int layers() const { return static_cast<int>(layers_.size()); }
  uint32_t slots_per_layer() const { return slots_; }
  std::string_view policy_name() const;
  // Cumulative counters of one layer.
  const HotRowStats& stats(int layer) const { return layers_.at(layer).stats; }

 private:
  struct Layer {
    std::unique_ptr<CachePolicy> policy;
    std::unordered_map<int64_t, uint32_t> map;  // row -> slot
    std::vector<int64_t> slot_row;              // slot -> row, -1 when free
    std::vector<uint64_t> used_in_step;         // slot -> last step that read it
    std::vector<uint32_t> free;                 // free slots (a stack)
    HotRowStats stats;
  };
  HotRowCache() = default;
  void Take(Layer& l, uint32_t slot, int64_t row);

  std::vector<Layer> layers_;
  uint32_t slots_ = 0;
  std::string policy_;
  uint64_t step_ = 1;
};

}  // namespace engram
