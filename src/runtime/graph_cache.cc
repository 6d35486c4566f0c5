#include "runtime/graph_cache.h"

#include <algorithm>

namespace engram {

int32_t BlockTableBucket(int32_t blocks) {
  if (blocks <= 4) return 4;
  if (blocks <= 64) {
    int32_t b = 8;
    while (b < blocks) b *= 2;
    return b;
  }
  return (blocks + 63) / 64 * 64;
}

GraphCache::GraphCache(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

bool GraphCache::SetEpoch(uint64_t epoch) {
  if (has_epoch_ && epoch == epoch_) return false;
  const bool first = !has_epoch_;
  has_epoch_ = true;
  epoch_ = epoch;
  if (first) return false;
  Invalidate();
  return true;
}

GraphCache::Entry* GraphCache::Find(const GraphKey& key) {
  auto it =
      std::find_if(entries_.begin(), entries_.end(), [&](const Item& i) { return i.key == key; });
  if (it == entries_.end()) return nullptr;
  entries_.splice(entries_.begin(), entries_, it);
  return &entries_.front().entry;
}

GraphCache::Entry& GraphCache::Add(const GraphKey& key) {
  entries_.push_front(Item{key, Entry{}});
  while (entries_.size() > capacity_) {
    entries_.pop_back();  // destroys its graph (CUDA frees a running one once it finished)
    ++evictions_;
  }
  return entries_.front().entry;
}

void GraphCache::Invalidate() {
  bool any = false;
  for (Item& i : entries_) {
    if (i.entry.state != Entry::State::kGraph) continue;
    i.entry.state = Entry::State::kWarm;
    i.entry.graph.reset();
    i.entry.logits = Tensor();
    any = true;
  }
  if (any) ++invalidations_;
}

int64_t GraphCache::graphs() const {
  return std::count_if(entries_.begin(), entries_.end(),
                       [](const Item& i) { return i.entry.state == Entry::State::kGraph; });
}

}  // namespace engram
