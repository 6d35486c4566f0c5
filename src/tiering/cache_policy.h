// Eviction/admission policies of the DRAM row cache (row_cache.h), as small swappable classes
// behind one interface. The cache owns the slots and the key -> slot map; a policy only orders
// the occupied slots and decides, when the cache is full, which slot to give up and whether a
// missed key deserves it.
//
//  - LruPolicy: admit every missed key, evict the least recently used slot.
//  - TinyLfuPolicy: LRU order for victims, plus TinyLFU admission (Einziger et al., "TinyLFU:
//    A Highly Efficient Cache Admission Policy"): a count-min sketch (4 rows of 8-bit
//    saturating counters, capped at 15) estimates each key's recent access frequency; when the
//    sketch has seen 10x capacity accesses every counter is halved (aging), so the estimate
//    follows a shifting working set. A missed key is admitted only if its estimate is strictly
//    greater than the LRU victim's. Engram row traffic is Zipf-like (frequent n-grams recur),
//    where admission keeps one-off rows from flushing the hot set; plain LRU order inside the
//    admitted set (instead of segmented LRU or a window) keeps the policy small, and the unit
//    test checks it is never materially worse than LRU on a Zipf trace.
//
// Thread safety: none; the owning RowCache is used by one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace engram {

class CachePolicy {
 public:
  virtual ~CachePolicy() = default;
  virtual std::string_view name() const = 0;  // "lru", "tinylfu"
  // Every lookup of `key`, hit or miss, before OnHit / the miss handling.
  virtual void RecordAccess(uint64_t key) = 0;
  virtual void OnHit(uint32_t slot) = 0;     // `slot` was read
  virtual void OnInsert(uint32_t slot) = 0;  // `slot` now holds a new key
  virtual void OnRemove(uint32_t slot) = 0;  // `slot` was evicted or erased
  // The slot to give up next (only called while at least one slot is occupied).
  virtual uint32_t Victim() const = 0;
  // Whether `candidate` (missed) may replace `victim_key` (held by Victim()) in a full cache.
  virtual bool Admit(uint64_t candidate, uint64_t victim_key) = 0;
};

// Recency order over slots 0..slots-1 (an intrusive doubly linked list in two arrays).
class LruPolicy : public CachePolicy {
 public:
  explicit LruPolicy(uint32_t slots);
  std::string_view name() const override { return "lru"; }
  void RecordAccess(uint64_t) override {}
  void OnHit(uint32_t slot) override;
  void OnInsert(uint32_t slot) override;
  void OnRemove(uint32_t slot) override;
  uint32_t Victim() const override { return tail_; }
  bool Admit(uint64_t, uint64_t) override { return true; }

 private:
  static constexpr uint32_t kNil = UINT32_MAX;
  void Unlink(uint32_t slot);
  void PushFront(uint32_t slot);
  std::vector<uint32_t> prev_, next_;
  uint32_t head_ = kNil, tail_ = kNil;  // head = most recent
};

// Count-min sketch of recent access frequencies with periodic halving (aging).
class FrequencySketch {
 public:
  // Sized for a cache of `capacity` keys: width = next power of two >= 4 * capacity (>= 64),
  // aging after 10 * capacity increments.
  explicit FrequencySketch(uint32_t capacity);
  void Increment(uint64_t key);
  uint32_t Estimate(uint64_t key) const;  // 0..15
  uint64_t agings() const { return agings_; }

 private:
  static constexpr int kDepth = 4;
  static constexpr uint8_t kMax = 15;
  size_t Index(uint64_t hash, int row) const;
  std::vector<uint8_t> table_;  // kDepth rows of width_ counters
  size_t width_ = 0;
  uint64_t sample_size_ = 0, additions_ = 0, agings_ = 0;
};

class TinyLfuPolicy : public LruPolicy {
 public:
  explicit TinyLfuPolicy(uint32_t slots);
  std::string_view name() const override { return "tinylfu"; }
  void RecordAccess(uint64_t key) override { sketch_.Increment(key); }
  bool Admit(uint64_t candidate, uint64_t victim_key) override {
    return sketch_.Estimate(candidate) > sketch_.Estimate(victim_key);
  }
  const FrequencySketch& sketch() const { return sketch_; }

 private:
  FrequencySketch sketch_;
};

// "lru" or "tinylfu"; INVALID_ARGUMENT naming the value and the accepted ones.
Result<std::unique_ptr<CachePolicy>> MakeCachePolicy(std::string_view name, uint32_t slots);

}  // namespace engram
