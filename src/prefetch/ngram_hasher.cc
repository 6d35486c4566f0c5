#include "prefetch/ngram_hasher.h"

#include <algorithm>
#include <limits>
#include <set>

#include "model/engram_geometry.h"
#include "prefetch/numpy_random.h"

namespace engram {
namespace {

__extension__ typedef unsigned __int128 U128;

// The reference's PRIME_1: layer l seeds its generator with seed + 10007 * l.
constexpr int64_t kLayerSeedStride = 10007;
// Bounds that keep Create's work and memory sane for any config it accepts.
constexpr int kMaxHeadsPerNgram = 4096;
constexpr int64_t kMaxTableSize = int64_t{1} << 62;

// x mod d for every 64-bit x, given magic = ceil(2^128 / d) (Lemire, Kaser, Kurz: "Faster
// remainder by direct computation", 2019): the low 128 bits of magic * x, times d, >> 128.
inline uint64_t FastMod(uint64_t x, uint64_t magic_lo, uint64_t magic_hi, uint64_t d) {
  const U128 magic = (static_cast<U128>(magic_hi) << 64) | magic_lo;
  const U128 low_bits = magic * x;
  const U128 bottom = static_cast<U128>(static_cast<uint64_t>(low_bits)) * d;
  const U128 top = static_cast<U128>(static_cast<uint64_t>(low_bits >> 64)) * d;
  return static_cast<uint64_t>((top + (bottom >> 64)) >> 64);
}

}  // namespace

Result<NgramHasher> NgramHasher::Create(const EngramConfig& config, CompressionMap map) {
  const EngramConfig& c = config;
  if (c.layer_ids.empty()) {
    return InvalidArgument("engram.layer_ids is empty, expected at least one layer id");
  }
  if (c.compressed_vocab_size > 0 && map.num_compressed() != c.compressed_vocab_size) {
    // V4.1: the multipliers derive from engram_compressed_vocab_size (OpenModel checks the
    // same; this keeps a hasher built any other way exact or refused).
    return InvalidArgument(
        "engram_compressed_vocab_size is {}, but the compression map has {} compressed ids",
        c.compressed_vocab_size, map.num_compressed());
  }
  std::set<int> seen_layers;
  for (int id : c.layer_ids) {
    if (id < 0) return InvalidArgument("engram.layer_ids has {}, expected ids >= 0", id);
    if (!seen_layers.insert(id).second) {
      return InvalidArgument("engram.layer_ids lists layer {} twice, expected distinct ids", id);
    }
  }
  if (c.max_ngram_size < 2 || c.max_ngram_size > kMaxNgramSize) {
    return InvalidArgument("engram.max_ngram_size is {}, expected 2..{}", c.max_ngram_size,
                           kMaxNgramSize);
  }
  if (c.engram_vocab_size.size() != static_cast<size_t>(c.max_ngram_size - 1)) {
    return InvalidArgument(
        "engram.engram_vocab_size has {} entries, expected max_ngram_size - 1 = {}",
        c.engram_vocab_size.size(), c.max_ngram_size - 1);
  }
  for (size_t i = 0; i < c.engram_vocab_size.size(); ++i) {
    if (c.engram_vocab_size[i] < 2 || c.engram_vocab_size[i] > kMaxTableSize) {
      return InvalidArgument("engram.engram_vocab_size[{}] is {}, expected 2..2^62", i,
                             c.engram_vocab_size[i]);
    }
  }
  if (c.n_head_per_ngram < 1 || c.n_head_per_ngram > kMaxHeadsPerNgram) {
    return InvalidArgument("engram.n_head_per_ngram is {}, expected 1..{}", c.n_head_per_ngram,
                           kMaxHeadsPerNgram);
  }
  if (c.seed < 0) return InvalidArgument("engram.seed is {}, expected >= 0", c.seed);
  if (map.vocab_size() < 1 || map.num_compressed() < 1) {
    return InvalidArgument("compression map is empty (vocab_size {}, num_compressed {})",
                           map.vocab_size(), map.num_compressed());
  }
  if (c.pad_id < 0 || c.pad_id >= map.vocab_size()) {
    return InvalidArgument("engram.pad_id is {}, expected a token id in [0, vocab_size = {})",
                           c.pad_id, map.vocab_size());
  }

  ENGRAM_ASSIGN_OR_RETURN(std::vector<EngramLayerGeometry> geometry, ComputeEngramGeometry(config));

  NgramHasher h;
  h.max_ngram_ = c.max_ngram_size;
  h.num_heads_ = c.num_heads();
  h.pad_compressed_ = map(c.pad_id);
  // The reference bounds the multipliers by the compressed vocabulary so that id * m_k
  // stays (mostly) within int64: half_bound = max(1, (INT64_MAX // V) // 2).
  const int64_t half_bound =
      std::max<int64_t>(1, (std::numeric_limits<int64_t>::max() / map.num_compressed()) / 2);

  for (const EngramLayerGeometry& g : geometry) {
    EngramLayerHash layer;
    layer.layer_id = g.layer_id;
    layer.primes = g.primes;
    layer.head_offsets = g.head_offsets;
    layer.total_rows = g.total_rows;

    // seed + 10007 * layer_id as Python computes it: an exact (unbounded) integer.
    const U128 layer_seed = static_cast<U128>(static_cast<uint64_t>(c.seed)) +
                            static_cast<U128>(kLayerSeedStride) * static_cast<uint64_t>(g.layer_id);
    const std::vector<uint32_t> words = numpy_random::IntToWords(
        static_cast<uint64_t>(layer_seed >> 64), static_cast<uint64_t>(layer_seed));
    numpy_random::Generator rng{numpy_random::SeedSequence(words)};
    layer.multipliers.resize(static_cast<size_t>(c.max_ngram_size));
    ENGRAM_RETURN_IF_ERROR(rng.Integers(0, half_bound, std::span<int64_t>(layer.multipliers)));
    for (int64_t& m : layer.multipliers) m = 2 * m + 1;

    std::vector<HeadReducer> reducers;
    for (size_t head = 0; head < g.head_sizes.size(); ++head) {
      HeadReducer r;
      r.prime = static_cast<uint64_t>(g.head_sizes[head]);
      const U128 magic = ~U128{0} / r.prime + 1;
      r.magic_lo = static_cast<uint64_t>(magic);
      r.magic_hi = static_cast<uint64_t>(magic >> 64);
      r.offset = g.head_offsets[head];
      reducers.push_back(r);
    }
    h.layers_.push_back(std::move(layer));
    h.reducers_.push_back(std::move(reducers));
  }
  h.map_ = std::move(map);
  return h;
}

void NgramHasher::Hash(int index, std::span<const int64_t> context, std::span<const int64_t> tokens,
                       bool add_offsets, int64_t* out) const {
  const EngramLayerHash& layer = layers_[static_cast<size_t>(index)];
  const HeadReducer* reducers = reducers_[static_cast<size_t>(index)].data();
  const int64_t* lookup = map_.lookup().data();
  const int n_max = max_ngram_;
  const int heads_per_ngram = num_heads_ / (n_max - 1);
  const size_t num_heads = static_cast<size_t>(num_heads_);

  uint64_t mult[kMaxNgramSize];
  for (int k = 0; k < n_max; ++k) mult[k] = static_cast<uint64_t>(layer.multipliers[k]);

  // window[k] holds the compressed id at position t - k once token t is shifted in. Before
  // the first token, window[k] holds position -(k + 1): the context's tail, else the pad.
  uint64_t window[kMaxNgramSize];
  const size_t ctx_used = std::min(context.size(), static_cast<size_t>(n_max - 1));
  for (int k = 0; k + 1 < n_max; ++k) {
    const size_t back = static_cast<size_t>(k) + 1;
    window[k] = static_cast<uint64_t>(back <= ctx_used ? lookup[context[context.size() - back]]
                                                       : pad_compressed_);
  }

  for (size_t t = 0; t < tokens.size(); ++t) {
    for (int k = n_max - 1; k > 0; --k) window[k] = window[k - 1];
    window[0] = static_cast<uint64_t>(lookup[tokens[t]]);

    int64_t* o = out + t * num_heads;
    const HeadReducer* r = reducers;
    // Unsigned arithmetic is the int64 wrap-around multiply and xor of the reference.
    uint64_t mix = window[0] * mult[0];
    for (int n = 2; n <= n_max; ++n) {
      mix ^= window[n - 1] * mult[n - 1];
      // numpy's % takes the divisor's sign: for negative mix (as int64), use
      // -mix - 1 = ~mix >= 0 and map its remainder rem to p - 1 - rem.
      const uint64_t sign = static_cast<uint64_t>(static_cast<int64_t>(mix) >> 63);
      const uint64_t magnitude = mix ^ sign;
      for (int j = 0; j < heads_per_ngram; ++j, ++r, ++o) {
        const uint64_t rem = FastMod(magnitude, r->magic_lo, r->magic_hi, r->prime);
        const int64_t index_in_head = static_cast<int64_t>((rem ^ sign) + (sign & r->prime));
        *o = add_offsets ? index_in_head + r->offset : index_in_head;
      }
    }
  }
}

Status NgramHasher::ValidateIds(std::span<const int64_t> ids) const {
  const int64_t vocab = map_.vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return OutOfRange("token id {} at position {} is outside the vocabulary [0, {})", ids[i], i,
                        vocab);
    }
  }
  return Status::Ok();
}

}  // namespace engram
