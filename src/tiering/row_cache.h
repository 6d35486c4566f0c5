// RowCache: a fixed-capacity DRAM cache of Engram table rows keyed by (layer, row), in front of
// the NVMe tier. Capacity in bytes becomes a number of equal slots (one row each) in one
// contiguous arena from AllocateHost; which rows stay is decided by a CachePolicy
// (cache_policy.h). Rows are copied in on Offer and out through the pointer Lookup returns.
//
// Ownership: owns the arena and the policy. Thread safety: none (the NVMe tier's single copy
// thread uses it); pointers from Lookup stay valid until the next Offer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "tiering/cache_policy.h"
#include "tiering/host_memory.h"

namespace engram {

struct RowCacheStats {
  uint64_t hits = 0, misses = 0;
  uint64_t admitted = 0;  // rows stored by Offer
  uint64_t rejected = 0;  // rows the policy refused
  uint64_t evicted = 0;   // rows dropped to make room
};

class RowCache {
 public:
  // capacity_bytes / row_bytes slots (0 slots: every lookup misses, nothing is stored).
  // `policy` names the policy ("tinylfu" | "lru"); the arena uses `page` pages.
  // INVALID_ARGUMENT for row_bytes 0 or an unknown policy; RESOURCE_EXHAUSTED when the arena
  // cannot be mapped.
  static Result<std::unique_ptr<RowCache>> Create(size_t row_bytes, size_t capacity_bytes,
                                                  std::string_view policy,
                                                  PageRequest page = PageRequest::kTransparentHuge);
  RowCache(const RowCache&) = delete;
  RowCache& operator=(const RowCache&) = delete;

  // The cached row (row_bytes() bytes) or nullptr; records the access with the policy.
  const void* Lookup(int layer, int64_t row);
  // Offers a row that missed: stores a copy of `src` if there is a free slot or the policy
  // admits it over its victim. Returns whether it was stored.
  bool Offer(int layer, int64_t row, const void* src);
  bool Contains(int layer, int64_t row) const { return map_.count(Key(layer, row)) != 0; }

  size_t row_bytes() const { return row_bytes_; }
  uint32_t capacity() const { return static_cast<uint32_t>(slot_key_.size()); }  // slots
  uint32_t size() const { return static_cast<uint32_t>(map_.size()); }
  size_t resident_bytes() const { return arena_.empty() ? 0 : arena_.info().mapped_bytes; }
  const CachePolicy& policy() const { return *policy_; }
  const RowCacheStats& stats() const { return stats_; }

  // (layer, row) -> key: layer in the top 16 bits, row in the low 48.
  static uint64_t Key(int layer, int64_t row) {
    return (static_cast<uint64_t>(layer) << 48) | (static_cast<uint64_t>(row) & ((1ull << 48) - 1));
  }

 private:
  RowCache() = default;
  std::byte* Slot(uint32_t slot) const {
    return static_cast<std::byte*>(arena_.data()) + size_t{slot} * row_bytes_;
  }

  size_t row_bytes_ = 0;
  HostAllocation arena_;
  std::unique_ptr<CachePolicy> policy_;
  std::unordered_map<uint64_t, uint32_t> map_;  // key -> slot
  std::vector<uint64_t> slot_key_;              // slot -> key (valid while occupied)
  uint32_t next_free_ = 0;                      // slots [next_free_, capacity) never used
  RowCacheStats stats_;
};

}  // namespace engram
