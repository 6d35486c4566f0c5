#include "prefetch/hot_row_cache.h"

namespace engram {

Result<std::unique_ptr<HotRowCache>> HotRowCache::Create(int layers, uint32_t slots_per_layer,
                                                         std::string_view policy) {
  if (layers < 1) return InvalidArgument("hot row cache: {} layers, expected >= 1", layers);
  if (slots_per_layer < 1) {
    return InvalidArgument("hot row cache: {} slots per layer, expected >= 1", slots_per_layer);
  }
  std::unique_ptr<HotRowCache> c(new HotRowCache());
  c->slots_ = slots_per_layer;
  c->policy_ = std::string(policy);
  c->layers_.resize(static_cast<size_t>(layers));
  for (Layer& l : c->layers_) {
    ENGRAM_ASSIGN_OR_RETURN(l.policy, MakeCachePolicy(policy, slots_per_layer));
    l.slot_row.assign(slots_per_layer, -1);
    l.used_in_step.assign(slots_per_layer, 0);
    l.free.reserve(slots_per_layer);
    for (uint32_t s = slots_per_layer; s-- > 0;) l.free.push_back(s);
    l.map.reserve(slots_per_layer);
  }
  return c;
}

std::string_view HotRowCache::policy_name() const { return policy_; }

int64_t HotRowCache::Lookup(int layer, int64_t row) {
  Layer& l = layers_.at(layer);
  ++l.stats.lookups;
  l.policy->RecordAccess(static_cast<uint64_t>(row));
  auto it = l.map.find(row);
  if (it == l.map.end()) return -1;
  ++l.stats.hits;
  l.policy->OnHit(it->second);
  l.used_in_step[it->second] = step_;
  return it->second;
}

void HotRowCache::Take(Layer& l, uint32_t slot, int64_t row) {
  l.slot_row[slot] = row;
  l.map[row] = slot;
  l.used_in_step[slot] = step_;
  l.policy->OnInsert(slot);
  ++l.stats.admitted;
}

int64_t HotRowCache::Admit(int layer, int64_t row) {
  Layer& l = layers_.at(layer);
  if (l.map.count(row) != 0) return -1;  // already held (the caller looked it up first)
  if (!l.free.empty()) {
    const uint32_t slot = l.free.back();
    l.free.pop_back();
    Take(l, slot, row);
    return slot;
  }
  const uint32_t victim = l.policy->Victim();
  if (l.used_in_step[victim] == step_) return -1;  // this step still reads it
  const int64_t victim_row = l.slot_row[victim];
  if (!l.policy->Admit(static_cast<uint64_t>(row), static_cast<uint64_t>(victim_row))) return -1;
  l.policy->OnRemove(victim);
  l.map.erase(victim_row);
  ++l.stats.evicted;
  Take(l, victim, row);
  return victim;
}

void HotRowCache::Forget(int layer, int64_t row) {
  Layer& l = layers_.at(layer);
  auto it = l.map.find(row);
  if (it == l.map.end()) return;
  const uint32_t slot = it->second;
  l.map.erase(it);
  l.policy->OnRemove(slot);
  l.slot_row[slot] = -1;
  l.free.push_back(slot);
}

void HotRowCache::Clear() {
  for (Layer& l : layers_) {
    for (uint32_t s = 0; s < slots_; ++s) {
      if (l.slot_row[s] >= 0) Forget(static_cast<int>(&l - layers_.data()), l.slot_row[s]);
    }
  }
}

}  // namespace engram
