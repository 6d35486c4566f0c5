// GraphCache: the engine's bookkeeping of decode steps captured as CUDA graphs
// (Backend::BeginCapture / EndCapture / Replay), keyed by the step's shape, least recently used
// first out. Host-side only: it decides nothing about CUDA and is tested without a GPU.
//
// A shape goes through: unknown -> kWarm (its first steps run eagerly; the first grew every
// buffer that shape needs) -> kGraph (a later step of that shape was captured; later ones replay)
// or kFailed (capture failed: that shape runs eagerly until the entry is evicted). A new epoch
// (some buffer a graph reads was reallocated: Engine::GraphEpoch) drops every graph; the shapes
// stay warm, since buffers only grow and what one step of a shape needed stays allocated.
//
// Thread safety: none; the engine thread owns it.
#pragma once

#include <cstdint>
#include <list>
#include <memory>

#include "kernels/backend.h"
#include "kernels/tensor.h"

namespace engram {

// What fixes a decode step's captured kernels: every size a launch reads on the host and every
// offset in the layout's device buffer follows from these (NOTES.md, "CUDA graphs").
struct GraphKey {
  int32_t tokens = 0;      // = sequences: one token each
  int32_t logit_rows = 0;  // rows of logits returned
  int32_t max_blocks = 0;  // block-table width (BlockTableBucket of the longest sequence's)
  bool operator==(const GraphKey&) const = default;
};

// The block-table width a graph-eligible step uses for `blocks` (the longest sequence's block
// count): the next power of two from 4 up to 64, then the next multiple of 64. Entries past a
// sequence's own blocks are never read, so padding only costs upload bytes, and a sequence
// crosses a bucket (a new graph) at 4, 8, 16, 32, 64, 128, 192, ... blocks instead of at
// every block.
int32_t BlockTableBucket(int32_t blocks);

// Counters of the graph path; all zero when graphs are off.
struct GraphStats {
  uint64_t captures = 0;          // graphs captured and instantiated
  uint64_t replays = 0;           // steps whose forward ran as a graph (capturing steps too)
  uint64_t warmups = 0;           // eligible steps run eagerly because their shape was new
  uint64_t eager = 0;             // eligible steps run eagerly after a failure (kFailed, errors)
  uint64_t capture_failures = 0;  // captures that failed (that shape then runs eagerly)
  uint64_t invalidations = 0;     // times every graph was dropped (a buffer grew, an error)
  uint64_t evictions = 0;         // shapes dropped by the LRU
  int64_t cached = 0;             // graphs held now
  double capture_s = 0;           // host time spent capturing and instantiating
};

class GraphCache {
 public:
  struct Entry {
    enum class State : uint8_t { kWarm, kGraph, kFailed };
    State state = State::kWarm;
    uint32_t eager_steps = 0;              // steps of this shape run eagerly while kWarm
    std::unique_ptr<CapturedGraph> graph;  // with kGraph
    Tensor logits;                         // with kGraph: what the captured forward returned
  };

  // capacity: shapes remembered (any state), >= 1.
  explicit GraphCache(size_t capacity);

  // Drops every graph when `epoch` differs from the previous call's (the first call only
  // records it). Returns whether graphs were dropped.
  bool SetEpoch(uint64_t epoch);
  // The entry of `key`, made the most recently used; nullptr when the shape is unknown.
  Entry* Find(const GraphKey& key);
  // A new kWarm entry for `key` (which must be unknown), the most recently used; evicts the
  // least recently used entry beyond capacity.
  Entry& Add(const GraphKey& key);
  // Drops every graph (kGraph -> kWarm; kFailed stays).
  void Invalidate();

  size_t size() const { return entries_.size(); }
  int64_t graphs() const;
  uint64_t invalidations() const { return invalidations_; }
  uint64_t evictions() const { return evictions_; }

 private:
  struct Item {
    GraphKey key;
    Entry entry;
  };
  const size_t capacity_;
  std::list<Item> entries_;  // most recently used first; short (capacity), searched linearly
  bool has_epoch_ = false;
  uint64_t epoch_ = 0;
  uint64_t invalidations_ = 0;
  uint64_t evictions_ = 0;
};

}  // namespace engram
