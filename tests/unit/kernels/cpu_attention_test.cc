// PagedAttention on the CPU backend: GQA over random non-contiguous block tables against a
// float64 causal reference; chunked prefill + decode equals one full prefill; mixed batches.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "cpu_test_util.h"

namespace engram {
namespace {

using cpu_test::FromVector;
using cpu_test::Poisoned;
using cpu_test::RandomFloats;
using cpu_test::RelError;
using cpu_test::ToVector;

struct Geometry {
  int nq, nkv, hd, block_size;
  int64_t row() const { return static_cast<int64_t>(nq + 2 * nkv) * hd; }
};

// A sequence: qkv rows for all its positions and its block table.
struct Sequence {
  std::vector<float> qkv;  // [len, row]
  std::vector<int32_t> blocks;
  int len = 0;
};

// One sequence's share of a step: positions [start, start + count).
struct Part {
  int seq;
  int start;
  int count;
};

class CpuAttentionTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUpCaches(const Geometry& g, int num_blocks) {
    geo_ = g;
    auto k = backend_->AllocZeros(DType::kF32, {num_blocks, g.block_size, g.nkv, g.hd});
    auto v = backend_->AllocZeros(DType::kF32, {num_blocks, g.block_size, g.nkv, g.hd});
    ASSERT_TRUE(k.ok() && v.ok());
    k_cache_ = *k;
    v_cache_ = *v;
    free_blocks_.resize(num_blocks);
    std::iota(free_blocks_.begin(), free_blocks_.end(), 0);
    std::shuffle(free_blocks_.begin(), free_blocks_.end(), std::mt19937(99));
  }

  int AddSequence(int len, uint32_t seed) {
    Sequence s;
    s.len = len;
    s.qkv = RandomFloats(static_cast<size_t>(len) * geo_.row(), seed, -2.f, 2.f);
    for (int b = 0; b < max_blocks_; ++b) {
      s.blocks.push_back(free_blocks_.back());
      free_blocks_.pop_back();
    }
    seqs_.push_back(std::move(s));
    return static_cast<int>(seqs_.size()) - 1;
  }

  BatchLayout Layout(const std::vector<Part>& parts) const {
    BatchLayout l;
    l.block_size = geo_.block_size;
    l.max_blocks_per_seq = max_blocks_;
    l.seq_token_start.push_back(0);
    for (size_t i = 0; i < parts.size(); ++i) {
      const Sequence& s = seqs_[parts[i].seq];
      for (int p = parts[i].start; p < parts[i].start + parts[i].count; ++p) {
        l.token_ids.push_back(0);
        l.positions.push_back(p);
        l.seq_of_token.push_back(static_cast<int32_t>(i));
        l.slot_mapping.push_back(s.blocks[p / geo_.block_size] * geo_.block_size +
                                 p % geo_.block_size);
      }
      l.seq_token_start.push_back(l.num_tokens());
      l.context_lens.push_back(parts[i].start + parts[i].count);
      l.state_slots.push_back(static_cast<int32_t>(i));
      l.block_tables.insert(l.block_tables.end(), s.blocks.begin(), s.blocks.end());
    }
    return l;
  }

  // Runs one step; returns out rows [tokens, nq * hd].
  std::vector<float> Step(const std::vector<Part>& parts) {
    BatchLayout l = Layout(parts);
    EXPECT_TRUE(l.Validate().ok());
    EXPECT_TRUE(backend_->UploadLayout(l).ok());
    std::vector<float> qkv;
    for (const Part& p : parts) {
      const Sequence& s = seqs_[p.seq];
      qkv.insert(qkv.end(), s.qkv.begin() + p.start * geo_.row(),
                 s.qkv.begin() + (p.start + p.count) * geo_.row());
    }
    const int64_t T = l.num_tokens();
    Tensor qkv_t = FromVector(qkv, {T, geo_.row()});
    Tensor out = Poisoned(*backend_, {T, static_cast<int64_t>(geo_.nq) * geo_.hd});
    Status st = backend_->PagedAttention(qkv_t, k_cache_, v_cache_, l, Params(), out);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return ToVector(out);
  }

  AttentionParams Params() const {
    AttentionParams p;
    p.num_q_heads = geo_.nq;
    p.num_kv_heads = geo_.nkv;
    p.head_dim = geo_.hd;
    p.scale = 1.f / std::sqrt(static_cast<float>(geo_.hd));
    return p;
  }

  // Float64 causal attention of positions [start, start + count) of a sequence.
  std::vector<double> Reference(int seq, int start, int count) const {
    const Sequence& s = seqs_[seq];
    const int G = geo_.nq / geo_.nkv, hd = geo_.hd;
    const int64_t row = geo_.row();
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    std::vector<double> out;
    for (int p = start; p < start + count; ++p) {
      for (int h = 0; h < geo_.nq; ++h) {
        const float* q = s.qkv.data() + p * row + h * hd;
        const int kvh = h / G;
        std::vector<double> w(p + 1);
        double mx = -1e300;
        for (int j = 0; j <= p; ++j) {
          const float* k = s.qkv.data() + j * row + (geo_.nq + kvh) * hd;
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += double(q[d]) * k[d];
          w[j] = dot * scale;
          mx = std::max(mx, w[j]);
        }
        double sum = 0;
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int d = 0; d < hd; ++d) {
          double acc = 0;
          for (int j = 0; j <= p; ++j) {
            acc += w[j] * s.qkv[j * row + (geo_.nq + geo_.nkv + kvh) * hd + d];
          }
          out.push_back(acc / sum);
        }
      }
    }
    return out;
  }

  std::unique_ptr<Backend> backend_ = cpu_test::MakeBackend(GetParam());
  Geometry geo_{};
  int max_blocks_ = 16;
  Tensor k_cache_, v_cache_;
  std::vector<int32_t> free_blocks_;
  std::vector<Sequence> seqs_;
};

TEST_P(CpuAttentionTest, FullPrefillMatchesReferenceForSeveralGeometries) {
  const Geometry geometries[] = {
      {8, 2, 20, 4},   // GQA, head_dim not a multiple of 8, tiny blocks
      {4, 4, 64, 16},  // MHA
      {4, 1, 128, 8},  // MQA
      {6, 3, 36, 5},   // odd block size
  };
  for (const Geometry& g : geometries) {
    SCOPED_TRACE(testing::Message()
                 << "nq=" << g.nq << " nkv=" << g.nkv << " hd=" << g.hd << " bs=" << g.block_size);
    seqs_.clear();
    max_blocks_ = 80 / g.block_size + 1;
    SetUpCaches(g, 4 * max_blocks_);
    const int s = AddSequence(61, 5);
    const auto out = Step({{s, 0, 61}});
    EXPECT_LE(RelError(out, Reference(s, 0, 61)), 1e-5);
  }
}

TEST_P(CpuAttentionTest, ShortStepsSplitKvHeadsOverUnits) {
  // 3 kv heads and few tokens: units cover runs of kv heads, the last one shorter.
  for (int len : {1, 2, 6, 7}) {
    SCOPED_TRACE(testing::Message() << "len=" << len);
    seqs_.clear();
    max_blocks_ = 4;
    SetUpCaches({6, 3, 16, 4}, 8);
    const int s = AddSequence(len, 11 + len);
    EXPECT_LE(RelError(Step({{s, 0, len}}), Reference(s, 0, len)), 1e-5);
  }
}

TEST_P(CpuAttentionTest, ChunkedPrefillThenDecodeEqualsOneFullPrefill) {
  SetUpCaches({8, 2, 20, 4}, 64);
  const int len = 37;
  const int a = AddSequence(len, 7);
  // The same tokens as sequence b, in other blocks, computed in one step.
  const int b = AddSequence(len, 7);
  const auto full = Step({{b, 0, len}});
  std::vector<float> pieces;
  int pos = 0;
  for (int count : {10, 1, 14}) {
    const auto out = Step({{a, pos, count}});
    pieces.insert(pieces.end(), out.begin(), out.end());
    pos += count;
  }
  for (; pos < len; ++pos) {
    const auto out = Step({{a, pos, 1}});
    pieces.insert(pieces.end(), out.begin(), out.end());
  }
  ASSERT_EQ(pieces.size(), full.size());
  std::vector<double> full_d(full.begin(), full.end());
  EXPECT_LE(RelError(pieces, full_d), 1e-6);
  EXPECT_LE(RelError(pieces, Reference(a, 0, len)), 1e-5);
}

TEST_P(CpuAttentionTest, MixedBatchOfDecodesAndAPrefillChunk) {
  SetUpCaches({8, 2, 20, 4}, 128);
  const int lens[] = {6, 18, 31, 2};
  std::vector<int> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(AddSequence(lens[i], 40 + i));
  // History: all but the last token(s) of each sequence, in one batched prefill.
  Step({{ids[0], 0, 5}, {ids[1], 0, 15}, {ids[2], 0, 30}, {ids[3], 0, 1}});
  // Decode tokens for three sequences, a 3-token chunk for the other.
  const auto out = Step({{ids[0], 5, 1}, {ids[1], 15, 3}, {ids[2], 30, 1}, {ids[3], 1, 1}});
  std::vector<double> ref;
  for (auto [s, start, count] :
       {std::tuple{0, 5, 1}, std::tuple{1, 15, 3}, std::tuple{2, 30, 1}, std::tuple{3, 1, 1}}) {
    const auto r = Reference(ids[s], start, count);
    ref.insert(ref.end(), r.begin(), r.end());
  }
  EXPECT_LE(RelError(out, ref), 1e-5);
}

// Head dims that are multiples of 16: at AVX-512 the prefill runs go through the tiles
// (attention_internal: 16 / G tokens a tile, here 4, 2, 1 and 5), chunks starting mid-block,
// two sequences in one step, a decode token beside a chunk.
TEST_P(CpuAttentionTest, PrefillTilesMatchReferenceForSeveralGroupSizes) {
  const Geometry geometries[] = {
      {16, 4, 64, 16},  // G = 4: 4 tokens a tile
      {16, 2, 32, 5},   // G = 8, odd block size
      {16, 1, 16, 7},   // G = 16: one token a tile
      {3, 3, 48, 16},   // MHA: 16 tokens a tile
  };
  for (const Geometry& g : geometries) {
    SCOPED_TRACE(testing::Message()
                 << "nq=" << g.nq << " nkv=" << g.nkv << " hd=" << g.hd << " bs=" << g.block_size);
    seqs_.clear();
    max_blocks_ = 90 / g.block_size + 1;
    SetUpCaches(g, 4 * max_blocks_);
    const int a = AddSequence(75, 21), b = AddSequence(10, 22);
    auto concat = [](std::vector<double> x, const std::vector<double>& y) {
      x.insert(x.end(), y.begin(), y.end());
      return x;
    };
    EXPECT_LE(
        RelError(Step({{a, 0, 23}, {b, 0, 9}}), concat(Reference(a, 0, 23), Reference(b, 0, 9))),
        1e-5);
    EXPECT_LE(
        RelError(Step({{b, 9, 1}, {a, 23, 52}}), concat(Reference(b, 9, 1), Reference(a, 23, 52))),
        1e-5);
  }
}

TEST_P(CpuAttentionTest, RejectsBadOperands) {
  SetUpCaches({4, 2, 8, 4}, 8);
  max_blocks_ = 2;
  const int s = AddSequence(6, 1);
  BatchLayout l = Layout({{s, 0, 6}});
  Tensor qkv = FromVector(seqs_[s].qkv, {6, geo_.row()});
  Tensor out = Poisoned(*backend_, {6, 32});
  l.block_tables[1] = 8;  // outside the cache
  l.slot_mapping[5] = 8 * 4 + 1;
  Status st = backend_->PagedAttention(qkv, k_cache_, v_cache_, l, Params(), out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("slot_mapping"), std::string::npos) << st.message();
  l.slot_mapping[5] = 1;
  st = backend_->PagedAttention(qkv, k_cache_, v_cache_, l, Params(), out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("block_tables"), std::string::npos) << st.message();
  l = Layout({{s, 0, 6}});
  Tensor small_cache = HostTensor(DType::kF32, {8, 4, 2, 4});
  st = backend_->PagedAttention(qkv, small_cache, v_cache_, l, Params(), out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("k_cache"), std::string::npos) << st.message();
  Tensor bad_out = Poisoned(*backend_, {6, 31});
  st = backend_->PagedAttention(qkv, k_cache_, v_cache_, l, Params(), bad_out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("out"), std::string::npos) << st.message();
  AttentionParams p = Params();
  p.num_kv_heads = 3;
  st = backend_->PagedAttention(qkv, k_cache_, v_cache_, l, p, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuAttentionTest, ::testing::ValuesIn(cpu_test::IsasToTest()),
                         cpu_test::IsaParamName);

}  // namespace
}  // namespace engram
