#include "tiering/row_cache.h"

#include <cstring>

namespace engram {

Result<std::unique_ptr<RowCache>> RowCache::Create(size_t row_bytes, size_t capacity_bytes,
                                                   std::string_view policy, PageRequest page) {
  if (row_bytes == 0) return InvalidArgument("row cache: row_bytes must be > 0");
  const size_t slots64 = capacity_bytes / row_bytes;
  if (slots64 >= UINT32_MAX) {
    return InvalidArgument("row cache: {} bytes is {} slots of {} bytes, more than {}",
                           capacity_bytes, slots64, row_bytes, UINT32_MAX - 1);
  }
  const auto slots = static_cast<uint32_t>(slots64);
  std::unique_ptr<RowCache> cache(new RowCache());
  cache->row_bytes_ = row_bytes;
  ENGRAM_ASSIGN_OR_RETURN(cache->policy_, MakeCachePolicy(policy, slots));
  if (slots > 0) {
    HostAllocOptions alloc;
    alloc.bytes = size_t{slots} * row_bytes;
    alloc.page = page;
    alloc.label = "engram row cache";
    ENGRAM_ASSIGN_OR_RETURN(cache->arena_, AllocateHost(alloc));
    cache->map_.reserve(slots);
  }
  cache->slot_key_.resize(slots);
  return cache;
}

const void* RowCache::Lookup(int layer, int64_t row) {
  const uint64_t key = Key(layer, row);
  policy_->RecordAccess(key);
  const auto it = map_.find(key);
  if (it == map_.end()) {
    ++stats_.misses;
    return nullptr;
  }
  ++stats_.hits;
  policy_->OnHit(it->second);
  return Slot(it->second);
}

bool RowCache::Offer(int layer, int64_t row, const void* src) {
  if (capacity() == 0) return false;
  const uint64_t key = Key(layer, row);
  if (map_.count(key) != 0) return true;  // already cached (offered twice)
  uint32_t slot;
  if (next_free_ < capacity()) {
    slot = next_free_++;
  } else {
    slot = policy_->Victim();
    const uint64_t victim_key = slot_key_[slot];
    if (!policy_->Admit(key, victim_key)) {
      ++stats_.rejected;
      return false;
    }
    policy_->OnRemove(slot);
    map_.erase(victim_key);
    ++stats_.evicted;
  }
  std::memcpy(Slot(slot), src, row_bytes_);
  slot_key_[slot] = key;
  map_.emplace(key, slot);
  policy_->OnInsert(slot);
  ++stats_.admitted;
  return true;
}

}  // namespace engram
