#include "prefetch/numpy_random.h"

namespace engram::numpy_random {
namespace {

__extension__ typedef unsigned __int128 U128;

// SeedSequence constants (numpy/random/bit_generator.pyx, after O'Neill's seed_seq).
constexpr uint32_t kInitA = 0x43b0d7e5;
constexpr uint32_t kMultA = 0x931e8875;
constexpr uint32_t kInitB = 0x8b51f9dd;
constexpr uint32_t kMultB = 0x58f38ded;
constexpr uint32_t kMixMultL = 0xca01f9dd;
constexpr uint32_t kMixMultR = 0x4973f715;
constexpr int kXShift = 16;  // half the bits of uint32
constexpr size_t kPoolSize = 4;

// PCG's default 128-bit LCG multiplier.
constexpr uint64_t kPcgMultHigh = 2549297995355413924ULL;
constexpr uint64_t kPcgMultLow = 4865540595714422341ULL;

uint32_t HashMix(uint32_t value, uint32_t& hash_const) {
  value ^= hash_const;
  hash_const *= kMultA;
  value *= hash_const;
  value ^= value >> kXShift;
  return value;
}

uint32_t Mix(uint32_t x, uint32_t y) {
  uint32_t result = kMixMultL * x - kMixMultR * y;
  result ^= result >> kXShift;
  return result;
}

U128 Make128(uint64_t high, uint64_t low) { return (static_cast<U128>(high) << 64) | low; }

}  // namespace

std::vector<uint32_t> IntToWords(uint64_t high, uint64_t low) {
  std::vector<uint32_t> words;
  U128 n = Make128(high, low);
  if (n == 0) words.push_back(0);
  while (n > 0) {
    words.push_back(static_cast<uint32_t>(n & 0xFFFFFFFFu));
    n >>= 32;
  }
  return words;
}

SeedSequence::SeedSequence(std::span<const uint32_t> entropy) {
  uint32_t hash_const = kInitA;
  // Fill the pool with the first words (or hashed zeros when entropy is short).
  for (size_t i = 0; i < kPoolSize; ++i) {
    pool_[i] = HashMix(i < entropy.size() ? entropy[i] : 0u, hash_const);
  }
  // Let every pool word affect every other.
  for (size_t src = 0; src < kPoolSize; ++src) {
    for (size_t dst = 0; dst < kPoolSize; ++dst) {
      if (src != dst) pool_[dst] = Mix(pool_[dst], HashMix(pool_[src], hash_const));
    }
  }
  // Fold in the words beyond the pool size.
  for (size_t src = kPoolSize; src < entropy.size(); ++src) {
    for (size_t dst = 0; dst < kPoolSize; ++dst) {
      pool_[dst] = Mix(pool_[dst], HashMix(entropy[src], hash_const));
    }
  }
}

SeedSequence SeedSequence::FromInt(uint64_t seed) {
  std::vector<uint32_t> words = IntToWords(0, seed);
  return SeedSequence(words);
}

void SeedSequence::GenerateState32(std::span<uint32_t> out) const {
  uint32_t hash_const = kInitB;
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t v = pool_[i % kPoolSize];
    v ^= hash_const;
    hash_const *= kMultB;
    v *= hash_const;
    v ^= v >> kXShift;
    out[i] = v;
  }
}

void SeedSequence::GenerateState64(std::span<uint64_t> out) const {
  std::vector<uint32_t> words(out.size() * 2);
  GenerateState32(words);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint64_t>(words[2 * i]) | (static_cast<uint64_t>(words[2 * i + 1]) << 32);
  }
}

Pcg64::Pcg64(uint64_t state_high, uint64_t state_low, uint64_t seq_high, uint64_t seq_low) {
  const U128 mult = Make128(kPcgMultHigh, kPcgMultLow);
  const U128 inc = (Make128(seq_high, seq_low) << 1) | 1u;
  U128 state = 0;
  state = state * mult + inc;
  state += Make128(state_high, state_low);
  state = state * mult + inc;
  state_hi_ = static_cast<uint64_t>(state >> 64);
  state_lo_ = static_cast<uint64_t>(state);
  inc_hi_ = static_cast<uint64_t>(inc >> 64);
  inc_lo_ = static_cast<uint64_t>(inc);
}

Pcg64 Pcg64::FromSeedSequence(const SeedSequence& seed_seq) {
  std::array<uint64_t, 4> v{};
  seed_seq.GenerateState64(v);
  // numpy's pcg64_set_seed: seed = v[0]:v[1], inc = v[2]:v[3] (high word first).
  return Pcg64(v[0], v[1], v[2], v[3]);
}

uint64_t Pcg64::Next64() {
  const U128 mult = Make128(kPcgMultHigh, kPcgMultLow);
  U128 state = Make128(state_hi_, state_lo_) * mult + Make128(inc_hi_, inc_lo_);
  state_hi_ = static_cast<uint64_t>(state >> 64);
  state_lo_ = static_cast<uint64_t>(state);
  // XSL-RR: xor the halves, rotate right by the top 6 bits.
  const uint64_t x = state_hi_ ^ state_lo_;
  const unsigned rot = static_cast<unsigned>(state_hi_ >> 58);
  return (x >> rot) | (x << ((64u - rot) & 63u));
}

uint32_t Pcg64::Next32() {
  if (has_uint32_) {
    has_uint32_ = false;
    return uinteger_;
  }
  const uint64_t next = Next64();
  has_uint32_ = true;
  uinteger_ = static_cast<uint32_t>(next >> 32);
  return static_cast<uint32_t>(next & 0xFFFFFFFFu);
}

double Pcg64::NextDouble() {
  return static_cast<double>(Next64() >> 11) * (1.0 / 9007199254740992.0);
}

void Generator::BoundedUint64Fill(uint64_t off, uint64_t rng, std::span<uint64_t> out) {
  if (rng == 0) {
    for (uint64_t& v : out) v = off;
  } else if (rng < 0xFFFFFFFFull) {
    // Lemire's method on 32-bit draws (numpy's buffered_bounded_lemire_uint32).
    const uint32_t rng_excl = static_cast<uint32_t>(rng) + 1;
    const uint32_t threshold = static_cast<uint32_t>((0xFFFFFFFFull - rng) % rng_excl);
    for (uint64_t& v : out) {
      uint64_t m = static_cast<uint64_t>(bitgen_.Next32()) * rng_excl;
      uint32_t leftover = static_cast<uint32_t>(m);
      if (leftover < rng_excl) {
        while (leftover < threshold) {
          m = static_cast<uint64_t>(bitgen_.Next32()) * rng_excl;
          leftover = static_cast<uint32_t>(m);
        }
      }
      v = off + (m >> 32);
    }
  } else if (rng == 0xFFFFFFFFull) {
    for (uint64_t& v : out) v = off + bitgen_.Next32();
  } else if (rng == ~uint64_t{0}) {
    for (uint64_t& v : out) v = off + bitgen_.Next64();
  } else {
    // Lemire's method on 64-bit draws with a 128-bit product (bounded_lemire_uint64).
    const uint64_t rng_excl = rng + 1;
    const uint64_t threshold = (~uint64_t{0} - rng) % rng_excl;
    for (uint64_t& v : out) {
      U128 m = static_cast<U128>(bitgen_.Next64()) * rng_excl;
      uint64_t leftover = static_cast<uint64_t>(m);
      if (leftover < rng_excl) {
        while (leftover < threshold) {
          m = static_cast<U128>(bitgen_.Next64()) * rng_excl;
          leftover = static_cast<uint64_t>(m);
        }
      }
      v = off + static_cast<uint64_t>(m >> 64);
    }
  }
}

Status Generator::Integers(int64_t low, int64_t high, std::span<int64_t> out) {
  if (low >= high) return InvalidArgument("integers: low >= high ({} >= {})", low, high);
  // numpy draws on the closed interval [low, high - 1]: rng = high - 1 - low, off = low.
  const uint64_t rng = static_cast<uint64_t>(high - 1) - static_cast<uint64_t>(low);
  std::vector<uint64_t> raw(out.size());
  BoundedUint64Fill(static_cast<uint64_t>(low), rng, raw);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<int64_t>(raw[i]);
  return Status::Ok();
}

Result<std::vector<int64_t>> Generator::Integers(int64_t low, int64_t high, size_t size) {
  std::vector<int64_t> out(size);
  ENGRAM_RETURN_IF_ERROR(Integers(low, high, std::span<int64_t>(out)));
  return out;
}

}  // namespace engram::numpy_random
