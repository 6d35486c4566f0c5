#include "model/weights.h"

#include <gtest/gtest.h>

#include "model/engram_geometry.h"
#include "model/synth.h"
#include "temp_dir.h"

namespace engram {
namespace {

using testutil::TempDir;

SynthModel Synth(const std::string& preset) {
  SynthOptions o;
  o.preset = preset;
  o.dtype = DType::kF32;
  auto m = SynthesizeInMemory(o);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::move(m).value();
}

// A copy of `src` without `drop`, and with `replace` (if given) swapped in.
TensorStore CopyStore(const TensorStore& src, const std::string& drop,
                      const std::string& replace_name = "", Tensor replace = {}) {
  TensorStore out;
  for (const std::string& name : src.Names()) {
    if (name == drop) continue;
    out.AddInMemory(name, name == replace_name ? replace : *src.Get(name));
  }
  return out;
}

TEST(LoadHostWeights, TinyShapes) {
  SynthModel m = Synth("tiny");
  auto w = LoadHostWeights(m.config, m.store);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->embed.shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ(w->lm_head.shape, (std::vector<int64_t>{512, 64}));
  EXPECT_NE(w->lm_head.data, w->embed.data);
  EXPECT_EQ(w->final_norm.shape, (std::vector<int64_t>{64}));
  ASSERT_EQ(w->layers.size(), 3u);
  const LayerWeights& l0 = w->layers[0];
  EXPECT_EQ(l0.q_w.shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(l0.k_w.shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(l0.v_w.shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(l0.o_w.shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(l0.gate_w.shape, (std::vector<int64_t>{160, 64}));
  EXPECT_EQ(l0.down_w.shape, (std::vector<int64_t>{64, 160}));
  EXPECT_TRUE(l0.q_b.empty());
  EXPECT_FALSE(l0.engram.has_value());
  EXPECT_FALSE(w->layers[2].engram.has_value());
  ASSERT_TRUE(w->layers[1].engram.has_value());
  const EngramWeights& e = *w->layers[1].engram;
  auto geometry = ComputeEngramGeometry(*m.config.engram);
  ASSERT_TRUE(geometry.ok());
  EXPECT_EQ(e.table.shape, (std::vector<int64_t>{(*geometry)[0].total_rows, 8}));
  EXPECT_EQ(e.value_w.shape, (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(e.key_b.shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(e.conv_w.shape, (std::vector<int64_t>{64, 1, 4}));
  EXPECT_EQ(e.conv_norm.shape, (std::vector<int64_t>{64}));
  EXPECT_FALSE(e.norm_key.empty());
  EXPECT_FALSE(e.norm_query.empty());
}

TEST(LoadHostWeights, TiedQwen2HasBiasesAndSharedHead) {
  SynthModel m = Synth("tiny-qwen2");
  EXPECT_FALSE(m.store.Has("lm_head.weight"));
  auto w = LoadHostWeights(m.config, m.store);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->lm_head.data, w->embed.data);
  ASSERT_EQ(w->layers.size(), 2u);
  for (const LayerWeights& l : w->layers) {
    EXPECT_EQ(l.q_b.shape, (std::vector<int64_t>{64}));
    EXPECT_EQ(l.k_b.shape, (std::vector<int64_t>{32}));
    EXPECT_EQ(l.v_b.shape, (std::vector<int64_t>{32}));
    ASSERT_TRUE(l.engram.has_value());
    EXPECT_EQ(l.engram->value_w.shape, (std::vector<int64_t>{64, 96}));  // (4 - 1) * 32
  }
  EXPECT_NE(w->layers[0].engram->table.dim(0), w->layers[1].engram->table.dim(0));
}

TEST(LoadHostWeights, MissingTensor) {
  SynthModel m = Synth("tiny");
  TensorStore store = CopyStore(m.store, "model.layers.1.engram.norm2.0.weight");
  auto w = LoadHostWeights(m.config, store);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);
  EXPECT_NE(w.status().message().find("no tensor \"model.layers.1.engram.norm2.0.weight\""),
            std::string::npos)
      << w.status().message();
}

TEST(LoadHostWeights, ShapeMismatch) {
  SynthModel m = Synth("tiny");
  const std::string name = "model.layers.2.self_attn.k_proj.weight";
  TensorStore store = CopyStore(m.store, "", name, HostTensor(DType::kF32, {64, 64}));
  auto w = LoadHostWeights(m.config, store);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find("tensor " + name + " has shape [64, 64], expected [32, 64]"),
            std::string::npos)
      << w.status().message();
}

TEST(LoadHostWeights, ShapeMismatchInFileNamesTheFile) {
  SynthModel m = Synth("tiny");
  TempDir dir;
  const std::string path = dir / "model.safetensors";
  const std::string bad = "model.layers.1.engram.multi_head_embedding.embedding.weight";
  std::vector<SafetensorsWriter::Spec> specs;
  for (const std::string& name : m.store.Names()) {
    const TensorInfo* info = m.store.Info(name);
    specs.push_back({name, info->dtype, name == bad ? std::vector<int64_t>{10, 8} : info->shape});
  }
  auto writer = SafetensorsWriter::Create(path, specs);
  ASSERT_TRUE(writer.ok());
  for (const auto& spec : specs) {
    Tensor t = *m.store.Get(spec.name);
    const size_t bytes = spec.name == bad ? 10 * 8 * 4 : t.nbytes();
    ASSERT_TRUE((*writer)->Append(t.data, bytes).ok());
  }
  ASSERT_TRUE((*writer)->Finish().ok());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto w = LoadHostWeights(m.config, *store);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(
      w.status().message().rfind(path + ": tensor " + bad + " has shape [10, 8], expected [", 0),
      0u)
      << w.status().message();
}

TEST(LoadHostWeights, NonFloatDtypeRejected) {
  SynthModel m = Synth("tiny");
  const std::string name = "model.norm.weight";
  TensorStore store = CopyStore(m.store, "", name, HostTensor(DType::kI32, {64}));
  auto w = LoadHostWeights(m.config, store);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find("tensor model.norm.weight has dtype I32, expected a float"),
            std::string::npos)
      << w.status().message();
}

TEST(LoadHostWeights, MixedFloatDtypesAccepted) {
  SynthModel m = Synth("tiny");
  TensorStore store = CopyStore(m.store, "", "model.norm.weight", HostTensor(DType::kF16, {64}));
  store.AddInMemory("model.embed_tokens.weight", HostTensor(DType::kBF16, {512, 64}));
  EXPECT_TRUE(LoadHostWeights(m.config, store).ok());
}

TEST(LoadHostWeights, NoShortConvNeedsNoConvTensors) {
  SynthModel m = Synth("tiny");
  ModelConfig config = m.config;
  config.engram->short_conv = false;
  TensorStore store = CopyStore(m.store, "model.layers.1.engram.short_conv.conv.weight");
  auto w = LoadHostWeights(config, store);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_TRUE(w->layers[1].engram->conv_w.empty());
}

TEST(LoadHostWeights, MlpBiasUnsupported) {
  SynthModel m = Synth("tiny");
  ModelConfig config = m.config;
  config.mlp_bias = true;
  auto w = LoadHostWeights(config, m.store);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kUnimplemented);
}

TEST(ExpectedTensors, FileOrderAndRoles) {
  SynthModel m = Synth("tiny");
  auto list = ExpectedTensors(m.config);
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->front().name, "model.embed_tokens.weight");
  EXPECT_EQ(list->back().name, "lm_head.weight");
  EXPECT_EQ(list->size(), m.store.Names().size());
  int tables = 0;
  for (const auto& e : *list) tables += e.role == TensorRole::kEngramTable;
  EXPECT_EQ(tables, 1);
}

}  // namespace
}  // namespace engram
