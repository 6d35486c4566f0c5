#include "prefetch/ngram_hasher.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/engram_geometry.h"
#include "prefetch/numpy_random.h"

namespace engram {
namespace {

using nlohmann::json;

const std::string kData = ENGRAM_TEST_DATA;

json LoadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

EngramConfig ConfigFromJson(const json& j) {
  EngramConfig c;
  c.engram_vocab_size = j.at("engram_vocab_size").get<std::vector<int64_t>>();
  c.max_ngram_size = j.at("max_ngram_size").get<int>();
  c.n_embed_per_ngram = j.at("n_embed_per_ngram").get<int>();
  c.n_head_per_ngram = j.at("n_head_per_ngram").get<int>();
  c.layer_ids = j.at("layer_ids").get<std::vector<int>>();
  c.pad_id = j.at("pad_id").get<int64_t>();
  c.seed = j.at("seed").get<int64_t>();
  c.kernel_size = j.at("kernel_size").get<int>();
  return c;
}

// The fixture and its hasher, loaded once for the whole binary.
struct Fixture {
  json vectors;
  EngramConfig config;
  std::optional<NgramHasher> hasher;

  static const Fixture& Get() {
    static const Fixture* f = [] {
      auto* f = new Fixture;
      f->vectors = LoadJson(kData + "/demo_default_config.json");
      f->config = ConfigFromJson(f->vectors.at("config"));
      auto map = CompressionMap::LoadJson(kData + "/deepseek_v3_compression.json", 0);
      EXPECT_TRUE(map.ok()) << map.status().ToString();
      auto h = NgramHasher::Create(f->config, std::move(map).value());
      EXPECT_TRUE(h.ok()) << h.status().ToString();
      if (h.ok()) f->hasher.emplace(std::move(h).value());
      return f;
    }();
    return *f;
  }
};

// The reference algorithm written as directly as possible (np.pad shifts, numpy's %), to
// check configs the fixture does not cover. out[t][h], without offsets.
std::vector<std::vector<int64_t>> ReferenceHashes(const NgramHasher& h, int index,
                                                  const std::vector<int64_t>& raw) {
  const EngramLayerHash& layer = h.layer(index);
  const int n_max = static_cast<int>(layer.multipliers.size());
  std::vector<int64_t> c;
  for (int64_t id : raw) c.push_back(h.compression()(id));
  auto at = [&](int64_t pos) { return pos < 0 ? h.compressed_pad_id() : c[pos]; };
  std::vector<std::vector<int64_t>> out(raw.size());
  for (size_t t = 0; t < raw.size(); ++t) {
    for (int n = 2; n <= n_max; ++n) {
      uint64_t mix = 0;
      for (int k = 0; k < n; ++k) {
        mix ^= static_cast<uint64_t>(at(static_cast<int64_t>(t) - k)) *
               static_cast<uint64_t>(layer.multipliers[k]);
      }
      for (int64_t p : layer.primes[n - 2]) {
        int64_t r = static_cast<int64_t>(mix) % p;
        if (r < 0) r += p;
        out[t].push_back(r);
      }
    }
  }
  return out;
}

std::vector<int64_t> HashAll(const NgramHasher& h, int index, const std::vector<int64_t>& ids,
                             bool add_offsets) {
  std::vector<int64_t> out(ids.size() * static_cast<size_t>(h.num_heads()));
  h.Hash(index, {}, ids, add_offsets, out.data());
  return out;
}

TEST(NgramHasher, MatchesFixtureMultipliersAndPrimes) {
  const Fixture& f = Fixture::Get();
  ASSERT_TRUE(f.hasher.has_value());
  const NgramHasher& h = *f.hasher;
  EXPECT_EQ(h.compression().num_compressed(), f.vectors.at("compressed_vocab_size").get<int64_t>());
  EXPECT_EQ(h.compressed_pad_id(), f.vectors.at("pad_id_compressed").get<int64_t>());
  EXPECT_EQ(h.num_heads(), 16);
  EXPECT_EQ(h.context_size(), 2);
  ASSERT_EQ(h.num_layers(), 2);
  for (int i = 0; i < h.num_layers(); ++i) {
    const EngramLayerHash& layer = h.layer(i);
    const json& expected = f.vectors.at("layers").at(std::to_string(layer.layer_id));
    EXPECT_EQ(layer.layer_id, f.config.layer_ids[i]);
    EXPECT_EQ(layer.multipliers, expected.at("multipliers").get<std::vector<int64_t>>());
    EXPECT_EQ(layer.primes, expected.at("primes").get<std::vector<std::vector<int64_t>>>());
    // Heads are concatenated in order h = (n - 2) * n_head_per_ngram + j.
    int64_t total = 0;
    size_t head = 0;
    ASSERT_EQ(layer.head_offsets.size(), 16u);
    for (const auto& order : layer.primes) {
      for (int64_t p : order) {
        EXPECT_EQ(layer.head_offsets[head++], total);
        total += p;
      }
    }
    EXPECT_EQ(layer.total_rows, total);
  }
}

TEST(NgramHasher, MatchesFixtureHashesOfEveryCase) {
  const Fixture& f = Fixture::Get();
  ASSERT_TRUE(f.hasher.has_value());
  const NgramHasher& h = *f.hasher;
  const size_t H = static_cast<size_t>(h.num_heads());
  size_t checked = 0;
  for (const json& c : f.vectors.at("cases")) {
    const std::string name = c.at("name").get<std::string>();
    const auto input = c.at("input_ids").get<std::vector<std::vector<int64_t>>>();
    const auto compressed = c.at("compressed_ids").get<std::vector<std::vector<int64_t>>>();
    ASSERT_EQ(input.size(), compressed.size()) << name;
    for (size_t b = 0; b < input.size(); ++b) {
      ASSERT_TRUE(h.ValidateIds(input[b]).ok()) << name;
      ASSERT_EQ(input[b].size(), compressed[b].size()) << name;
      for (size_t t = 0; t < input[b].size(); ++t) {
        EXPECT_EQ(h.compression()(input[b][t]), compressed[b][t]) << name << " b" << b << " t" << t;
      }
    }
    for (int i = 0; i < h.num_layers(); ++i) {
      const EngramLayerHash& layer = h.layer(i);
      const auto expected = c.at("hashes")
                                .at(std::to_string(layer.layer_id))
                                .get<std::vector<std::vector<std::vector<int64_t>>>>();
      ASSERT_EQ(expected.size(), input.size()) << name;
      for (size_t b = 0; b < input.size(); ++b) {
        const std::vector<int64_t> got = HashAll(h, i, input[b], false);
        const std::vector<int64_t> got_offsets = HashAll(h, i, input[b], true);
        ASSERT_EQ(expected[b].size(), input[b].size()) << name;
        for (size_t t = 0; t < input[b].size(); ++t) {
          ASSERT_EQ(expected[b][t].size(), H) << name;
          for (size_t hh = 0; hh < H; ++hh) {
            EXPECT_EQ(got[t * H + hh], expected[b][t][hh])
                << name << " layer " << layer.layer_id << " b" << b << " t" << t << " h" << hh;
            EXPECT_EQ(got_offsets[t * H + hh], expected[b][t][hh] + layer.head_offsets[hh]);
            ++checked;
          }
        }
      }
    }
  }
  // 7 cases: 13 + 6 + 11 + 16 + 3*40 + 1 + 2*2 tokens, 16 heads, 2 layers.
  EXPECT_EQ(checked, size_t{(13 + 6 + 11 + 16 + 120 + 1 + 4) * 16 * 2});
}

TEST(NgramHasher, ChunkedHashingEqualsWholeSequence) {
  const Fixture& f = Fixture::Get();
  ASSERT_TRUE(f.hasher.has_value());
  const NgramHasher& h = *f.hasher;
  const size_t H = static_cast<size_t>(h.num_heads());
  const size_t ctx = static_cast<size_t>(h.context_size());
  for (const json& c : f.vectors.at("cases")) {
    for (const auto& ids : c.at("input_ids").get<std::vector<std::vector<int64_t>>>()) {
      for (int i = 0; i < h.num_layers(); ++i) {
        const std::vector<int64_t> whole = HashAll(h, i, ids, true);
        for (size_t chunk : {1u, 2u, 3u, 5u, 7u, 16u}) {
          for (bool long_context : {false, true}) {
            std::vector<int64_t> pieces(whole.size(), -1);
            for (size_t start = 0; start < ids.size(); start += chunk) {
              const size_t len = std::min(chunk, ids.size() - start);
              // The previous N - 1 tokens (fewer at the start), or the whole prefix.
              const size_t from = long_context ? 0 : (start > ctx ? start - ctx : 0);
              std::span<const int64_t> context(ids.data() + from, start - from);
              std::span<const int64_t> tokens(ids.data() + start, len);
              h.Hash(i, context, tokens, true, pieces.data() + start * H);
            }
            EXPECT_EQ(pieces, whole) << c.at("name") << " layer index " << i << " chunk " << chunk
                                     << " long_context " << long_context;
          }
        }
      }
    }
  }
}

TEST(NgramHasher, LayerSeedsFollowSeedPlus10007TimesLayer) {
  const Fixture& f = Fixture::Get();
  ASSERT_TRUE(f.hasher.has_value());
  // Layer 1 of seed 0 uses seed 10007; so does layer 0 of seed 10007. Layer 15 of seed 0 uses
  // 150105 = 140098 + 10007 * 1.
  EngramConfig c = f.config;
  c.seed = 10007;
  c.layer_ids = {0};
  auto a = NgramHasher::Create(c, f.hasher->compression());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->layer(0).multipliers, f.hasher->layer(0).multipliers);
  c.seed = 140098;
  c.layer_ids = {1};
  auto b = NgramHasher::Create(c, f.hasher->compression());
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->layer(0).multipliers, f.hasher->layer(1).multipliers);
}

TEST(NgramHasher, MultipliersComeFromDefaultRng) {
  EngramConfig c;
  c.engram_vocab_size = {1000, 2000, 3000};
  c.max_ngram_size = 4;
  c.n_head_per_ngram = 2;
  c.layer_ids = {0, 7};
  c.pad_id = 0;
  c.seed = 12345;
  const int64_t vocab = 5000;
  auto h = NgramHasher::Create(c, CompressionMap::Identity(vocab));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  const int64_t half_bound = (std::numeric_limits<int64_t>::max() / vocab) / 2;
  for (int i = 0; i < 2; ++i) {
    auto g =
        numpy_random::Generator::DefaultRng(static_cast<uint64_t>(12345 + 10007 * c.layer_ids[i]));
    auto r = g.Integers(0, half_bound, 4);
    ASSERT_TRUE(r.ok());
    for (int64_t& v : *r) v = 2 * v + 1;
    EXPECT_EQ(h->layer(i).multipliers, *r);
  }
}

TEST(NgramHasher, SeedsBeyondInt64AfterTheLayerStrideStillWork) {
  EngramConfig c;
  c.engram_vocab_size = {101};
  c.max_ngram_size = 2;
  c.n_head_per_ngram = 1;
  c.layer_ids = {3};
  c.pad_id = 1;
  c.seed = std::numeric_limits<int64_t>::max();  // seed + 10007 * 3 > 2^63
  auto h = NgramHasher::Create(c, CompressionMap::Identity(10));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  // Python: SeedSequence(2**63 - 1 + 30021) -> words of that 64-bit value.
  const uint64_t total = 0x7FFFFFFFFFFFFFFFull + 30021;
  const std::vector<uint32_t> words = numpy_random::IntToWords(0, total);
  numpy_random::Generator g{numpy_random::SeedSequence(words)};
  const int64_t half_bound = (std::numeric_limits<int64_t>::max() / 10) / 2;
  auto r = g.Integers(0, half_bound, 2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(h->layer(0).multipliers, (std::vector<int64_t>{2 * (*r)[0] + 1, 2 * (*r)[1] + 1}));
}

struct OtherConfig {
  int64_t seed;
  int max_ngram;
  int heads;
  int64_t table;
  std::vector<int> layers;
};

TEST(NgramHasher, OtherConfigsGiveInRangeValuesEqualToTheReference) {
  const Fixture& f = Fixture::Get();
  ASSERT_TRUE(f.hasher.has_value());
  const std::vector<OtherConfig> configs = {
      {1, 3, 8, 646400, {1, 15}},           {12345, 4, 1, 1000, {0, 2, 5}},
      {987654321, 5, 3, 500000000, {3, 9}}, {0, 4, 4, 499999999, {0, 1, 2, 3}},
      {int64_t{1} << 40, 5, 2, 7, {11}},
  };
  // Deterministic pseudo-random token streams over the DeepSeek vocabulary, including the
  // extreme ids.
  const int64_t vocab = f.hasher->compression().vocab_size();
  std::vector<int64_t> ids = {0, vocab - 1, 2, 2, 2, vocab - 1, 0};
  numpy_random::Generator g = numpy_random::Generator::DefaultRng(5);
  auto more = g.Integers(0, vocab, 300);
  ASSERT_TRUE(more.ok());
  ids.insert(ids.end(), more->begin(), more->end());

  for (const OtherConfig& oc : configs) {
    EngramConfig c;
    c.seed = oc.seed;
    c.max_ngram_size = oc.max_ngram;
    c.n_head_per_ngram = oc.heads;
    c.engram_vocab_size.assign(static_cast<size_t>(oc.max_ngram - 1), oc.table);
    c.layer_ids = oc.layers;
    c.pad_id = 2;
    const auto start = std::chrono::steady_clock::now();
    auto h = NgramHasher::Create(c, f.hasher->compression());
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    RecordProperty("create_seconds_table_" + std::to_string(oc.table), std::to_string(secs));
    EXPECT_LT(secs, 30.0) << "prime search too slow for table size " << oc.table;
    ASSERT_EQ(h->num_heads(), (oc.max_ngram - 1) * oc.heads);
    ASSERT_EQ(h->context_size(), oc.max_ngram - 1);

    const int64_t half_bound =
        (std::numeric_limits<int64_t>::max() / h->compression().num_compressed()) / 2;
    std::set<int64_t> all_primes;
    for (int i = 0; i < h->num_layers(); ++i) {
      const EngramLayerHash& layer = h->layer(i);
      ASSERT_EQ(layer.multipliers.size(), static_cast<size_t>(oc.max_ngram));
      for (int64_t m : layer.multipliers) {
        EXPECT_EQ(m % 2, 1);
        EXPECT_GE(m, 1);
        EXPECT_LT(m, 2 * half_bound);
      }
      for (const auto& order : layer.primes) {
        for (int64_t p : order) {
          EXPECT_TRUE(IsPrime(static_cast<uint64_t>(p))) << p;
          EXPECT_GE(p, oc.table);
          EXPECT_TRUE(all_primes.insert(p).second) << "prime " << p << " used twice";
        }
      }
      const size_t H = static_cast<size_t>(h->num_heads());
      const std::vector<int64_t> got = HashAll(*h, i, ids, false);
      const std::vector<int64_t> got_offsets = HashAll(*h, i, ids, true);
      const auto expected = ReferenceHashes(*h, i, ids);
      std::vector<int64_t> sizes;
      for (const auto& order : layer.primes) sizes.insert(sizes.end(), order.begin(), order.end());
      for (size_t t = 0; t < ids.size(); ++t) {
        for (size_t hh = 0; hh < H; ++hh) {
          const int64_t v = got[t * H + hh];
          ASSERT_GE(v, 0);
          ASSERT_LT(v, sizes[hh]);
          ASSERT_EQ(v, expected[t][hh]) << "seed " << oc.seed << " t" << t << " h" << hh;
          ASSERT_EQ(got_offsets[t * H + hh], v + layer.head_offsets[hh]);
          ASSERT_LT(got_offsets[t * H + hh], layer.total_rows);
        }
      }
    }
  }
}

TEST(NgramHasher, ValidateIdsNamesTheBadPosition) {
  auto h = NgramHasher::Create(Fixture::Get().config, CompressionMap::Identity(100));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_TRUE(h->ValidateIds(std::vector<int64_t>{0, 99, 5}).ok());
  Status st = h->ValidateIds(std::vector<int64_t>{0, 100, 5});
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("position 1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("100"), std::string::npos) << st.message();
  EXPECT_FALSE(h->ValidateIds(std::vector<int64_t>{-1}).ok());
}

TEST(NgramHasher, InvalidConfigsNameTheKey) {
  const EngramConfig base = Fixture::Get().config;
  struct Bad {
    std::function<void(EngramConfig&)> mutate;
    std::string key;
  };
  const std::vector<Bad> bad = {
      {[](EngramConfig& c) { c.layer_ids.clear(); }, "engram.layer_ids"},
      {[](EngramConfig& c) {
         c.layer_ids = {1, 15, 1};
       },
       "engram.layer_ids"},
      {[](EngramConfig& c) { c.layer_ids = {-1}; }, "engram.layer_ids"},
      {[](EngramConfig& c) { c.max_ngram_size = 1; }, "engram.max_ngram_size"},
      {[](EngramConfig& c) { c.max_ngram_size = 1000; }, "engram.max_ngram_size"},
      {[](EngramConfig& c) { c.engram_vocab_size = {646400}; }, "engram.engram_vocab_size"},
      {[](EngramConfig& c) {
         c.engram_vocab_size = {646400, 1};
       },
       "engram.engram_vocab_size[1]"},
      {[](EngramConfig& c) { c.n_head_per_ngram = 0; }, "engram.n_head_per_ngram"},
      {[](EngramConfig& c) { c.seed = -1; }, "engram.seed"},
      {[](EngramConfig& c) { c.pad_id = 100; }, "engram.pad_id"},
      {[](EngramConfig& c) { c.pad_id = -3; }, "engram.pad_id"},
  };
  for (const Bad& b : bad) {
    EngramConfig c = base;
    b.mutate(c);
    auto h = NgramHasher::Create(c, CompressionMap::Identity(100));
    ASSERT_FALSE(h.ok()) << b.key;
    EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument) << b.key;
    EXPECT_NE(h.status().message().find(b.key), std::string::npos)
        << "expected the message to name " << b.key << ": " << h.status().message();
  }
  auto empty = NgramHasher::Create(base, CompressionMap::Identity(0));
  EXPECT_FALSE(empty.ok());
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

// V4.1's multipliers derive from engram_compressed_vocab_size: a map of another size is
// refused naming both numbers; an equal one hashes as the paper layout does.
TEST(NgramHasher, V41CompressedVocabMustMatchTheMap) {
  EngramConfig c;
  c.engram_vocab_size = {101};
  c.max_ngram_size = 2;
  c.n_head_per_ngram = 1;
  c.layer_ids = {0};
  c.compressed_vocab_size = 12;
  auto bad = NgramHasher::Create(c, CompressionMap::Identity(10));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "engram_compressed_vocab_size is 12, but the compression map has 10 compressed ids");
  auto good = NgramHasher::Create(c, CompressionMap::Identity(12));
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  c.compressed_vocab_size = 0;
  auto paper = NgramHasher::Create(c, CompressionMap::Identity(12));
  ASSERT_TRUE(paper.ok());
  EXPECT_EQ(good->layer(0).multipliers, paper->layer(0).multipliers);
}

}  // namespace
}  // namespace engram
