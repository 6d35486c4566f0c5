#include "model/engram_geometry.h"

#include <set>

namespace engram {
namespace {

__extension__ typedef unsigned __int128 U128;

uint64_t MulMod(uint64_t a, uint64_t b, uint64_t m) {
  return static_cast<uint64_t>(static_cast<U128>(a) * b % m);
}

uint64_t PowMod(uint64_t b, uint64_t e, uint64_t m) {
  uint64_t r = 1;
  b %= m;
  while (e) {
    if (e & 1) r = MulMod(r, b, m);
    b = MulMod(b, b, m);
    e >>= 1;
  }
  return r;
}

}  // namespace

bool IsPrime(uint64_t n) {
  if (n < 2) return false;
  for (uint64_t p :
       {2ull, 3ull, 5ull, 7ull, 11ull, 13ull, 17ull, 19ull, 23ull, 29ull, 31ull, 37ull}) {
    if (n % p == 0) return n == p;
  }
  uint64_t d = n - 1;
  int s = 0;
  while ((d & 1) == 0) {
    d >>= 1;
    ++s;
  }
  // These bases decide every n < 2^64.
  for (uint64_t a :
       {2ull, 3ull, 5ull, 7ull, 11ull, 13ull, 17ull, 19ull, 23ull, 29ull, 31ull, 37ull}) {
    uint64_t x = PowMod(a, d, n);
    if (x == 1 || x == n - 1) continue;
    bool composite = true;
    for (int r = 1; r < s; ++r) {
      x = MulMod(x, x, n);
      if (x == n - 1) {
        composite = false;
        break;
      }
    }
    if (composite) return false;
  }
  return true;
}

Result<std::vector<EngramLayerGeometry>> ComputeEngramGeometry(const EngramConfig& c) {
  if (c.max_ngram_size < 2) {
    return InvalidArgument("engram.max_ngram_size is {}, expected >= 2", c.max_ngram_size);
  }
  if (c.engram_vocab_size.size() != static_cast<size_t>(c.max_ngram_size - 1)) {
    return InvalidArgument(
        "engram.engram_vocab_size has {} entries, expected max_ngram_size - 1 = {}",
        c.engram_vocab_size.size(), c.max_ngram_size - 1);
  }
  if (c.n_head_per_ngram < 1) {
    return InvalidArgument("engram.n_head_per_ngram is {}, expected >= 1", c.n_head_per_ngram);
  }
  for (size_t i = 0; i < c.engram_vocab_size.size(); ++i) {
    if (c.engram_vocab_size[i] < 2) {
      return InvalidArgument("engram.engram_vocab_size[{}] is {}, expected >= 2", i,
                             c.engram_vocab_size[i]);
    }
  }
  for (size_t i = 0; i < c.engram_vocab_size.size(); ++i) {
    if (c.engram_vocab_size[i] > ConfigLimits::kMaxEngramVocab) {
      return InvalidArgument("engram.engram_vocab_size[{}] is {}, expected at most {}", i,
                             c.engram_vocab_size[i], ConfigLimits::kMaxEngramVocab);
    }
  }
  const int64_t searches = static_cast<int64_t>(c.layer_ids.size()) * (c.max_ngram_size - 1) *
                           int64_t{c.n_head_per_ngram};
  if (searches > ConfigLimits::kMaxEngramTableHeads) {
    return InvalidArgument(
        "engram: {} layers x {} orders x {} heads = {} table heads, expected at most {}",
        c.layer_ids.size(), c.max_ngram_size - 1, c.n_head_per_ngram, searches,
        ConfigLimits::kMaxEngramTableHeads);
  }
  // Below 2^64 no two consecutive primes are 1600 apart; a search this long means a bug.
  constexpr int64_t kMaxPrimeGap = 1 << 20;
  std::set<int64_t> seen;
  std::vector<EngramLayerGeometry> out;
  for (int layer_id : c.layer_ids) {
    EngramLayerGeometry g;
    g.layer_id = layer_id;
    for (int n = 2; n <= c.max_ngram_size; ++n) {
      std::vector<int64_t> heads;
      int64_t start = c.engram_vocab_size[n - 2] - 1;
      for (int j = 0; j < c.n_head_per_ngram; ++j) {
        int64_t cand = start + 1;
        while (!IsPrime(static_cast<uint64_t>(cand)) || seen.count(cand)) {
          if (++cand - start > kMaxPrimeGap) {
            return Internal("engram: no unused prime within {} of {}", kMaxPrimeGap, start);
          }
        }
        seen.insert(cand);
        heads.push_back(cand);
        start = cand;
      }
      g.primes.push_back(heads);
      for (int64_t p : heads) {
        g.head_offsets.push_back(g.total_rows);
        g.head_sizes.push_back(p);
        g.total_rows += p;
      }
    }
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace engram
