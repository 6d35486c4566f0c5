// numpy's default random generator reproduced bit for bit: np.random.SeedSequence,
// np.random.PCG64 and Generator.integers(..., dtype=np.int64). The Engram hash multipliers
// come from np.random.default_rng(seed).integers(0, half_bound, N, np.int64) (DESIGN.md);
// matching numpy's algorithms exactly is what makes our row indices equal the reference's.
//
// Scope: only what default_rng(int).integers(int64) and random() need. Objects are plain
// values (copyable); none is thread safe, give each thread its own.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"

namespace engram::numpy_random {

// numpy's _int_to_uint32_array for a non-negative integer given as 128 bits (high, low):
// 32-bit words, lowest first; 0 -> {0}. Python ints of any size split the same way.
std::vector<uint32_t> IntToWords(uint64_t high, uint64_t low);

// np.random.SeedSequence(entropy) with the default pool_size 4 and no spawn key.
class SeedSequence {
 public:
  // `entropy` is the uint32 word array numpy assembles (see IntToWords); any length.
  explicit SeedSequence(std::span<const uint32_t> entropy);
  // SeedSequence(seed) for an integer seed in [0, 2^64).
  static SeedSequence FromInt(uint64_t seed);

  const std::array<uint32_t, 4>& pool() const { return pool_; }
  // generate_state(out.size(), np.uint32).
  void GenerateState32(std::span<uint32_t> out) const;
  // generate_state(out.size(), np.uint64): twice the 32-bit words, paired little-endian.
  void GenerateState64(std::span<uint64_t> out) const;

 private:
  std::array<uint32_t, 4> pool_{};
};

// np.random.PCG64: 128-bit LCG with the XSL-RR 64-bit output, plus numpy's 32-bit buffering
// (next32 returns the low half of a 64-bit draw, then its high half).
class Pcg64 {
 public:
  // pcg64_srandom_r(initstate, initseq) with 128-bit values given as (high, low) halves.
  Pcg64(uint64_t state_high, uint64_t state_low, uint64_t seq_high, uint64_t seq_low);
  // PCG64(seed_seq): state words from seed_seq.generate_state(4, np.uint64).
  static Pcg64 FromSeedSequence(const SeedSequence& seed_seq);

  uint64_t Next64();
  uint32_t Next32();
  double NextDouble();  // (next64 >> 11) * 2^-53, numpy's random()

 private:
  uint64_t state_hi_ = 0, state_lo_ = 0, inc_hi_ = 0, inc_lo_ = 0;
  bool has_uint32_ = false;
  uint32_t uinteger_ = 0;
};

// np.random.Generator(PCG64), the object np.random.default_rng(seed) returns.
class Generator {
 public:
  explicit Generator(const SeedSequence& seed_seq) : bitgen_(Pcg64::FromSeedSequence(seed_seq)) {}
  // default_rng(seed) for seed in [0, 2^64).
  static Generator DefaultRng(uint64_t seed) { return Generator(SeedSequence::FromInt(seed)); }

  // integers(low, high, size=out.size(), dtype=np.int64) with endpoint=False: each value in
  // [low, high). INVALID_ARGUMENT when low >= high (numpy raises ValueError).
  Status Integers(int64_t low, int64_t high, std::span<int64_t> out);
  Result<std::vector<int64_t>> Integers(int64_t low, int64_t high, size_t size);
  // random(): a double in [0, 1).
  double Random() { return bitgen_.NextDouble(); }

  // numpy's random_bounded_uint64_fill (use_masked=False): values off + [0, rng] inclusive.
  // rng == 0 draws nothing; rng < 2^32 - 1 uses the 32-bit Lemire method over Next32();
  // rng == 2^32 - 1 returns Next32(); larger ranges use 64-bit Lemire over Next64().
  void BoundedUint64Fill(uint64_t off, uint64_t rng, std::span<uint64_t> out);

  Pcg64& bit_generator() { return bitgen_; }

 private:
  Pcg64 bitgen_;
};

}  // namespace engram::numpy_random
