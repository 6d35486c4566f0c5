#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/simd_avx2.h"

namespace engram {
namespace {

// Up to this many q heads of a kv group share each load of a key or value row.
constexpr int kHeadBatch = 4;
// Cache blocks between the one computing and the one being prefetched.
constexpr int64_t kPrefetchBlocks = 1;

// ---- scores: s[g * ss + j] = (q_g · k_j) * scale for g < gb, j < n, where q_g = q + g * hd
// and k_j = k + j * ks

void ScoresScalar(const float* q, int gb, const float* k, int64_t ks, int n, int hd, float scale,
                  float* s, int64_t ss) {
  for (int g = 0; g < gb; ++g) {
    for (int j = 0; j < n; ++j) {
      const float* qg = q + g * hd;
      const float* kj = k + j * ks;
      float acc = 0.f;
      for (int d = 0; d < hd; ++d) acc += qg[d] * kj[d];
      s[g * ss + j] = acc * scale;
    }
  }
}

// Lane i of the result is the sum of the lanes of a[i].
ENGRAM_AVX2_INLINE __m256 Sum8(const __m256* a) {
  const __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

// GB heads x JB keys (GB * JB <= 8 independent accumulators); out[g * JB + jj] = q_g · k_jj.
template <int GB, int JB>
ENGRAM_AVX2_INLINE void ScoresTile(const float* q, const float* const* kj, int hd, float* out) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
  const int full = hd & ~7;
  for (int d = 0; d < full; d += 8) {
    __m256 kv[JB];
#pragma GCC unroll 8
    for (int jj = 0; jj < JB; ++jj) kv[jj] = _mm256_loadu_ps(kj[jj] + d);
#pragma GCC unroll 4
    for (int g = 0; g < GB; ++g) {
      const __m256 qv = _mm256_loadu_ps(q + g * hd + d);
#pragma GCC unroll 8
      for (int jj = 0; jj < JB; ++jj)
        acc[g * JB + jj] = _mm256_fmadd_ps(qv, kv[jj], acc[g * JB + jj]);
    }
  }
  if (full < hd) {
    const __m256i mask = avx2::TailMask(hd - full);
#pragma GCC unroll 4
    for (int g = 0; g < GB; ++g) {
      const __m256 qv = _mm256_maskload_ps(q + g * hd + full, mask);
#pragma GCC unroll 8
      for (int jj = 0; jj < JB; ++jj) {
        acc[g * JB + jj] =
            _mm256_fmadd_ps(qv, _mm256_maskload_ps(kj[jj] + full, mask), acc[g * JB + jj]);
      }
    }
  }
  _mm256_storeu_ps(out, Sum8(acc));
}

template <int GB>
ENGRAM_AVX2 void ScoresAvx2Heads(const float* q, const float* k, int64_t ks, int n, int hd,
                                 float scale, float* s, int64_t ss) {
  constexpr int JB = GB == 1 ? 8 : GB == 2 ? 4 : 2;
  for (int j0 = 0; j0 < n; j0 += JB) {
    // Keys past n repeat the last one; their scores are dropped.
    const float* kj[JB];
    for (int jj = 0; jj < JB; ++jj) kj[jj] = k + std::min(j0 + jj, n - 1) * ks;
    float r[8];
    ScoresTile<GB, JB>(q, kj, hd, r);
    for (int g = 0; g < GB; ++g) {
      for (int jj = 0; jj < JB && j0 + jj < n; ++jj) s[g * ss + j0 + jj] = r[g * JB + jj] * scale;
    }
  }
}

void ScoresAvx2(const float* q, int gb, const float* k, int64_t ks, int n, int hd, float scale,
                float* s, int64_t ss) {
  switch (gb) {
    case 1:
      return ScoresAvx2Heads<1>(q, k, ks, n, hd, scale, s, ss);
    case 2:
      return ScoresAvx2Heads<2>(q, k, ks, n, hd, scale, s, ss);
    case 3:
      return ScoresAvx2Heads<3>(q, k, ks, n, hd, scale, s, ss);
    default:
      return ScoresAvx2Heads<4>(q, k, ks, n, hd, scale, s, ss);
  }
}

// ---- s[j] = exp(s[j] - shift); returns the sum

float ExpShiftScalar(float* s, int n, float shift) {
  float sum = 0.f;
  for (int j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - shift);
    sum += s[j];
  }
  return sum;
}

ENGRAM_AVX2 float ExpShiftAvx2(float* s, int n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = avx2::Exp(_mm256_sub_ps(_mm256_loadu_ps(s + j), sh));
    _mm256_storeu_ps(s + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (j < n) {
    const __m256i mask = avx2::TailMask(n - j);
    const __m256 e = _mm256_and_ps(avx2::Exp(_mm256_sub_ps(_mm256_maskload_ps(s + j, mask), sh)),
                                   _mm256_castsi256_ps(mask));
    _mm256_maskstore_ps(s + j, mask, e);
    sum = _mm256_add_ps(sum, e);
  }
  return avx2::HorizontalSum(sum);
}

// ---- acc_g[d] = acc_g[d] * corr[g] + sum_j p[g * ps + j] * v_j[d] for g < gb, where
// acc_g = acc + g * hd and v_j = v + j * vs

void AccumulateScalar(float* acc, const float* corr, int gb, const float* p, int64_t ps,
                      const float* v, int64_t vs, int n, int hd) {
  for (int g = 0; g < gb; ++g) {
    float* ag = acc + g * hd;
    for (int d = 0; d < hd; ++d) ag[d] *= corr[g];
    for (int j = 0; j < n; ++j) {
      const float pj = p[g * ps + j];
      const float* vj = v + j * vs;
      for (int d = 0; d < hd; ++d) ag[d] += pj * vj[d];
    }
  }
}

// Columns [d0, d0 + 8 * DW) of GB heads, held in registers across the block's keys.
template <int GB, int DW>
ENGRAM_AVX2_INLINE void AccumulateColumns(float* acc, const float* corr, const float* p, int64_t ps,
                                          const float* v, int64_t vs, int n, int hd, int d0) {
  __m256 r[GB][DW];
#pragma GCC unroll 4
  for (int g = 0; g < GB; ++g) {
    const __m256 c = _mm256_set1_ps(corr[g]);
#pragma GCC unroll 4
    for (int w = 0; w < DW; ++w)
      r[g][w] = _mm256_mul_ps(_mm256_loadu_ps(acc + g * hd + d0 + 8 * w), c);
  }
  for (int j = 0; j < n; ++j) {
    __m256 vv[DW];
#pragma GCC unroll 4
    for (int w = 0; w < DW; ++w) vv[w] = _mm256_loadu_ps(v + j * vs + d0 + 8 * w);
#pragma GCC unroll 4
    for (int g = 0; g < GB; ++g) {
      const __m256 pj = _mm256_broadcast_ss(p + g * ps + j);
#pragma GCC unroll 4
      for (int w = 0; w < DW; ++w) r[g][w] = _mm256_fmadd_ps(pj, vv[w], r[g][w]);
    }
  }
#pragma GCC unroll 4
  for (int g = 0; g < GB; ++g) {
#pragma GCC unroll 4
    for (int w = 0; w < DW; ++w) _mm256_storeu_ps(acc + g * hd + d0 + 8 * w, r[g][w]);
  }
}

template <int GB>
ENGRAM_AVX2 void AccumulateAvx2Heads(float* acc, const float* corr, const float* p, int64_t ps,
                                     const float* v, int64_t vs, int n, int hd) {
  constexpr int DW = GB <= 2 ? 4 : 2;  // registers per head and column chunk
  int d = 0;
  for (; d + 8 * DW <= hd; d += 8 * DW)
    AccumulateColumns<GB, DW>(acc, corr, p, ps, v, vs, n, hd, d);
  for (; d + 8 <= hd; d += 8) AccumulateColumns<GB, 1>(acc, corr, p, ps, v, vs, n, hd, d);
  for (; d < hd; ++d) {
    for (int g = 0; g < GB; ++g) {
      float r = acc[g * hd + d] * corr[g];
      for (int j = 0; j < n; ++j) r += p[g * ps + j] * v[j * vs + d];
      acc[g * hd + d] = r;
    }
  }
}

void AccumulateAvx2(float* acc, const float* corr, int gb, const float* p, int64_t ps,
                    const float* v, int64_t vs, int n, int hd) {
  switch (gb) {
    case 1:
      return AccumulateAvx2Heads<1>(acc, corr, p, ps, v, vs, n, hd);
    case 2:
      return AccumulateAvx2Heads<2>(acc, corr, p, ps, v, vs, n, hd);
    case 3:
      return AccumulateAvx2Heads<3>(acc, corr, p, ps, v, vs, n, hd);
    default:
      return AccumulateAvx2Heads<4>(acc, corr, p, ps, v, vs, n, hd);
  }
}

struct Kernels {
  void (*scores)(const float*, int, const float*, int64_t, int, int, float, float*, int64_t);
  float (*exp_shift)(float*, int, float);
  void (*accumulate)(float*, const float*, int, const float*, int64_t, const float*, int64_t, int,
                     int);
};

// Per-thread working memory of one unit of H q heads.
struct Scratch {
  std::vector<float> acc;             // [H, hd]
  std::vector<float> scores;          // [H, block_size]
  std::vector<float> max, sum, corr;  // [H] each
};

// Attention of token t's q heads of kv heads [kvh0, kvh0 + nh) over positions
// 0..positions[t], one cache block at a time with an online softmax per q head. Handling
// several kv heads per block reads each cache row as one contiguous piece.
void AttendUnit(const Kernels& kern, const PagedAttentionArgs& a, int64_t t, int kvh0, int nh,
                Scratch& sc) {
  const int G = a.nq / a.nkv, hd = a.hd, bs = a.block_size;
  const int H = nh * G;  // q heads of this unit
  const int64_t row = static_cast<int64_t>(a.nq + 2 * a.nkv) * hd;
  const int64_t kv_stride = static_cast<int64_t>(a.nkv) * hd;  // between cache positions
  const int64_t ctx = static_cast<int64_t>(a.positions[t]) + 1;
  const int32_t* table =
      a.block_tables + static_cast<int64_t>(a.seq_of_token[t]) * a.max_blocks_per_seq;
  const float* q = a.qkv + t * row + static_cast<int64_t>(kvh0) * G * hd;
  std::fill_n(sc.acc.begin(), static_cast<size_t>(H) * hd, 0.f);
  std::fill_n(sc.max.begin(), H, -std::numeric_limits<float>::infinity());
  std::fill_n(sc.sum.begin(), H, 0.f);
  for (int64_t p0 = 0; p0 < ctx; p0 += bs) {
    const int n = static_cast<int>(std::min<int64_t>(bs, ctx - p0));
    const int64_t block = (static_cast<int64_t>(table[p0 / bs]) * bs) * kv_stride;
    const int64_t ahead = p0 + kPrefetchBlocks * bs;  // first position of the block to fetch
    if (ahead < ctx) {
      // A unit's rows sit a position stride apart, a pattern no hardware prefetcher follows:
      // fetch a later block's rows while this one computes.
      const int64_t next = (static_cast<int64_t>(table[ahead / bs]) * bs) * kv_stride;
      const int rows = static_cast<int>(std::min<int64_t>(bs, ctx - ahead));
      for (int j = 0; j < rows; ++j) {
        const int64_t r = next + j * kv_stride;
        for (int64_t off = int64_t{kvh0} * hd; off < int64_t{kvh0 + nh} * hd; off += 16) {
          __builtin_prefetch(a.k_cache + r + off, 0, 3);
          __builtin_prefetch(a.v_cache + r + off, 0, 3);
        }
      }
    }
    for (int h = 0; h < nh; ++h) {
      const float* kb = a.k_cache + block + static_cast<int64_t>(kvh0 + h) * hd;
      const float* vb = a.v_cache + block + static_cast<int64_t>(kvh0 + h) * hd;
      for (int g0 = h * G; g0 < (h + 1) * G; g0 += kHeadBatch) {
        const int gb = std::min(kHeadBatch, (h + 1) * G - g0);
        float* scores = sc.scores.data() + static_cast<int64_t>(g0) * bs;
        kern.scores(q + static_cast<int64_t>(g0) * hd, gb, kb, kv_stride, n, hd, a.scale, scores,
                    bs);
        for (int g = g0; g < g0 + gb; ++g) {
          float* s = sc.scores.data() + static_cast<int64_t>(g) * bs;
          float mx = s[0];
          for (int j = 1; j < n; ++j) mx = std::max(mx, s[j]);
          const float m_new = std::max(sc.max[g], mx);
          sc.corr[g] = sc.max[g] == -std::numeric_limits<float>::infinity()
                           ? 0.f
                           : std::exp(sc.max[g] - m_new);
          sc.sum[g] = sc.sum[g] * sc.corr[g] + kern.exp_shift(s, n, m_new);
          sc.max[g] = m_new;
        }
        kern.accumulate(sc.acc.data() + static_cast<int64_t>(g0) * hd, sc.corr.data() + g0, gb,
                        scores, bs, vb, kv_stride, n, hd);
      }
    }
  }
  float* out = a.out + t * static_cast<int64_t>(a.nq) * hd + static_cast<int64_t>(kvh0) * G * hd;
  for (int g = 0; g < H; ++g) {
    const float inv = 1.f / sc.sum[g];
    const float* acc = sc.acc.data() + static_cast<int64_t>(g) * hd;
    for (int d = 0; d < hd; ++d) out[static_cast<int64_t>(g) * hd + d] = acc[d] * inv;
  }
}

// Whether some token continues the previous one's sequence at the next position (a prefill
// chunk of two or more tokens).
bool HasRun(const PagedAttentionArgs& a) {
  for (int64_t t = 1; t < a.tokens; ++t) {
    if (a.seq_of_token[t] == a.seq_of_token[t - 1] && a.positions[t] == a.positions[t - 1] + 1) {
      return true;
    }
  }
  return false;
}

// Step 2 of PagedAttention at AVX-512 when the step has prefill runs: each run of consecutive
// tokens of one sequence is cut into tiles of up to 16 / G tokens, one unit per (tile, kv
// head); a token alone (decode) is a unit over all kv heads on the token kernels. Units with
// the longest contexts are claimed first.
void TiledAttention(const Kernels& kern, ThreadPool& pool, const PagedAttentionArgs& a) {
  const int G = a.nq / a.nkv;
  const int tile_tokens = attention_internal::kTileRows / G;
  struct Unit {
    int64_t t0;
    int nt;        // 0: token t0 alone, all kv heads (AttendUnit)
    int kvh;       // tiles: the kv head
    int32_t last;  // last position: the context length - 1
  };
  std::vector<Unit> units;
  for (int64_t t = 0; t < a.tokens;) {
    int64_t end = t + 1;
    while (end < a.tokens && a.seq_of_token[end] == a.seq_of_token[t] &&
           a.positions[end] == a.positions[end - 1] + 1) {
      ++end;
    }
    if (end - t == 1) {
      units.push_back({t, 0, 0, a.positions[t]});
    } else {
      for (int64_t t0 = t; t0 < end; t0 += tile_tokens) {
        const int nt = static_cast<int>(std::min<int64_t>(tile_tokens, end - t0));
        for (int h = 0; h < a.nkv; ++h) units.push_back({t0, nt, h, a.positions[t0 + nt - 1]});
      }
    }
    t = end;
  }
  std::stable_sort(units.begin(), units.end(),
                   [](const Unit& x, const Unit& y) { return x.last > y.last; });
  const int threads = pool.num_threads();
  std::vector<Scratch> scratch(threads);
  std::vector<std::vector<float>> tile(threads);
  for (int i = 0; i < threads; ++i) {
    Scratch& s = scratch[i];
    s.acc.resize(static_cast<size_t>(a.nq) * a.hd);
    s.scores.resize(static_cast<size_t>(a.nq) * a.block_size);
    s.max.resize(a.nq);
    s.sum.resize(a.nq);
    s.corr.resize(a.nq);
    tile[i].resize(attention_internal::TileScratchFloats(a.hd, a.block_size));
  }
  pool.ParallelFor(static_cast<int64_t>(units.size()), [&](int64_t i, int thread) {
    const Unit& u = units[static_cast<size_t>(i)];
    if (u.nt == 0) {
      AttendUnit(kern, a, u.t0, 0, a.nkv, scratch[thread]);
    } else {
      attention_internal::AttendTileAvx512(a, u.t0, u.nt, u.kvh, tile[thread].data());
    }
  });
}

}  // namespace

void PagedAttention(CpuIsa isa, ThreadPool& pool, const PagedAttentionArgs& a) {
  const int hd = a.hd;
  const int64_t row = static_cast<int64_t>(a.nq + 2 * a.nkv) * hd;
  const int64_t kv_bytes = static_cast<int64_t>(a.nkv) * hd * sizeof(float);
  // 1. This step's keys and values go into the cache first: tokens attend to themselves and
  // to earlier tokens of their chunk.
  ParallelRange(pool, a.tokens, 64, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t slot = a.slot_mapping[t];
      const float* k = a.qkv + t * row + static_cast<int64_t>(a.nq) * hd;
      std::memcpy(a.k_cache + slot * a.nkv * hd, k, kv_bytes);
      std::memcpy(a.v_cache + slot * a.nkv * hd, k + static_cast<int64_t>(a.nkv) * hd, kv_bytes);
    }
  });
  // 2. Attention.
  const Kernels kern = UsesAvx2(isa) ? Kernels{&ScoresAvx2, &ExpShiftAvx2, &AccumulateAvx2}
                                     : Kernels{&ScoresScalar, &ExpShiftScalar, &AccumulateScalar};
  if (isa == CpuIsa::kAvx512 && attention_internal::TileShapeOk(a.nq, a.nkv, hd) && HasRun(a)) {
    return TiledAttention(kern, pool, a);
  }
  // Units of (token, run of kv heads): all heads of a token when there are enough tokens to
  // keep every thread busy (whole cache rows stream contiguously), fewer for small batches.
  const int64_t target_units = 4 * static_cast<int64_t>(pool.num_threads());
  const int heads_per_unit =
      static_cast<int>(std::clamp<int64_t>(a.nkv * a.tokens / target_units, 1, a.nkv));
  const int units_per_token = (a.nkv + heads_per_unit - 1) / heads_per_unit;
  const int H = heads_per_unit * (a.nq / a.nkv);
  std::vector<Scratch> scratch(pool.num_threads());
  for (Scratch& s : scratch) {
    s.acc.resize(static_cast<size_t>(H) * hd);
    s.scores.resize(static_cast<size_t>(H) * a.block_size);
    s.max.resize(H);
    s.sum.resize(H);
    s.corr.resize(H);
  }
  // The longest contexts (last tokens) are claimed first.
  pool.ParallelFor(a.tokens * units_per_token, [&](int64_t unit, int thread) {
    const int64_t t = a.tokens - 1 - unit / units_per_token;
    const int kvh0 = static_cast<int>(unit % units_per_token) * heads_per_unit;
    AttendUnit(kern, a, t, kvh0, std::min(heads_per_unit, a.nkv - kvh0), scratch[thread]);
  });
}

}  // namespace engram
