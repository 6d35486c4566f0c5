#include "tiering/cache_policy.h"

#include <algorithm>
#include <bit>

namespace engram {

LruPolicy::LruPolicy(uint32_t slots) : prev_(slots, kNil), next_(slots, kNil) {}

void LruPolicy::Unlink(uint32_t slot) {
  const uint32_t p = prev_[slot], n = next_[slot];
  if (p != kNil)
    next_[p] = n;
  else
    head_ = n;
  if (n != kNil)
    prev_[n] = p;
  else
    tail_ = p;
  prev_[slot] = next_[slot] = kNil;
}

void LruPolicy::PushFront(uint32_t slot) {
  prev_[slot] = kNil;
  next_[slot] = head_;
  if (head_ != kNil) prev_[head_] = slot;
  head_ = slot;
  if (tail_ == kNil) tail_ = slot;
}

void LruPolicy::OnHit(uint32_t slot) {
  if (head_ == slot) return;
  Unlink(slot);
  PushFront(slot);
}

void LruPolicy::OnInsert(uint32_t slot) { PushFront(slot); }

void LruPolicy::OnRemove(uint32_t slot) { Unlink(slot); }

namespace {
uint64_t Mix(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

FrequencySketch::FrequencySketch(uint32_t capacity) {
  width_ = std::bit_ceil(std::max<size_t>(64, size_t{capacity} * 4));
  table_.assign(width_ * kDepth, 0);
  sample_size_ = std::max<uint64_t>(64, uint64_t{capacity} * 10);
}

size_t FrequencySketch::Index(uint64_t hash, int row) const {
  // Each row takes 16 bits of the hash, re-mixed with the row number (double hashing).
  const uint64_t h = hash + static_cast<uint64_t>(row) * ((hash >> 32) | 1);
  return static_cast<size_t>(row) * width_ + (Mix(h) & (width_ - 1));
}

void FrequencySketch::Increment(uint64_t key) {
  const uint64_t h = Mix(key);
  bool added = false;
  for (int r = 0; r < kDepth; ++r) {
    uint8_t& c = table_[Index(h, r)];
    if (c < kMax) {
      ++c;
      added = true;
    }
  }
  if (added && ++additions_ >= sample_size_) {
    for (uint8_t& c : table_) c >>= 1;
    additions_ /= 2;
    ++agings_;
  }
}

uint32_t FrequencySketch::Estimate(uint64_t key) const {
  const uint64_t h = Mix(key);
  uint32_t m = kMax;
  for (int r = 0; r < kDepth; ++r) m = std::min<uint32_t>(m, table_[Index(h, r)]);
  return m;
}

TinyLfuPolicy::TinyLfuPolicy(uint32_t slots) : LruPolicy(slots), sketch_(slots) {}

Result<std::unique_ptr<CachePolicy>> MakeCachePolicy(std::string_view name, uint32_t slots) {
  if (name == "lru") return std::unique_ptr<CachePolicy>(std::make_unique<LruPolicy>(slots));
  if (name == "tinylfu") {
    return std::unique_ptr<CachePolicy>(std::make_unique<TinyLfuPolicy>(slots));
  }
  return InvalidArgument("unknown row cache policy \"{}\" (accepted: \"tinylfu\", \"lru\")", name);
}

}  // namespace engram
