#include "model/weights.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "../../support/temp_dir.h"
#include "model/engram_geometry.h"
#include "model/synth.h"
#include "v41_model.h"

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
  int tables = 0, scales = 0;
  for (const auto& e : *list) {
    tables += e.role == TensorRole::kEngramTable;
    scales += e.role == TensorRole::kEngramScale;
  }
  EXPECT_EQ(tables, 1);
  // The optional FP8 row scales of the table: absent from the BF16 synthetic model.
  EXPECT_EQ(scales, 1);
  EXPECT_EQ(list->size(), m.store.Names().size() + 1);
  auto scale = std::find_if(list->begin(), list->end(),
                            [](const auto& e) { return e.role == TensorRole::kEngramScale; });
  EXPECT_EQ(scale->name, "model.layers.1.engram.multi_head_embedding.embedding.scale");
  EXPECT_EQ(scale->scale_of, "model.layers.1.engram.multi_head_embedding.embedding.weight");
  EXPECT_EQ(scale->shape, (std::vector<int64_t>{(scale - 1)->shape[0], 1}));  // Dh 8: 1 block
  EXPECT_EQ((scale - 1)->name, scale->scale_of);
}

using testutil::ParseConfig;
using testutil::StoreFor;
using testutil::V41ConfigJson;

const std::string kL1 = "model.layers.1.engram.";

// The V4.1 tensors of one Engram layer, in order, with their shapes, roles and scale_of.
TEST(ExpectedTensorsV41, NamesShapesAndScales) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  auto list = ExpectedTensors(c);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  auto g = ComputeEngramGeometry(*c.engram);
  ASSERT_TRUE(g.ok());
  const int64_t rows = (*g)[0].total_rows;
  std::vector<const ExpectedTensor*> engram;
  for (const ExpectedTensor& e : *list) {
    if (e.name.rfind(kL1, 0) == 0) engram.push_back(&e);
  }
  ASSERT_EQ(engram.size(), 6u);
  auto expect = [&](size_t i, const std::string& name, std::vector<int64_t> shape, TensorRole role,
                    const std::string& scale_of) {
    EXPECT_EQ(engram[i]->name, kL1 + name);
    EXPECT_EQ(engram[i]->shape, shape) << name;
    EXPECT_EQ(engram[i]->role, role) << name;
    EXPECT_EQ(engram[i]->scale_of, scale_of.empty() ? "" : kL1 + scale_of) << name;
    EXPECT_EQ(engram[i]->layer, 1);
  };
  expect(0, "embed.weight", {rows, 32}, TensorRole::kEngramTable, "");
  expect(1, "embed.scale", {rows, 1}, TensorRole::kEngramScale, "embed.weight");
  expect(2, "wkv.weight", {128, 256}, TensorRole::kEngramWkv, "");  // [(1 + 1) x 64, 2 x 128]
  expect(3, "wkv.scale", {4, 8}, TensorRole::kEngramScale, "wkv.weight");
  expect(4, "q_weight", {1, 64}, TensorRole::kEngramGateW, "");
  expect(5, "k_weight", {1, 64}, TensorRole::kEngramGateW, "");
  EXPECT_EQ(EngramTableName(*c.engram, 1), kL1 + "embed.weight");
  EXPECT_EQ(EngramScaleName(*c.engram, 1), kL1 + "embed.scale");
  EXPECT_EQ(EngramTableName(EngramConfig{}, 4),
            "model.layers.4.engram.multi_head_embedding.embedding.weight");
  EXPECT_EQ(EngramScaleName(EngramConfig{}, 4),
            "model.layers.4.engram.multi_head_embedding.embedding.scale");
}

TEST(LoadHostWeightsV41, Fp8TableAndWkvLoadWithTheirScales) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  const TensorStore store = StoreFor(c);
  ASSERT_TRUE(CheckExpectedTensors(c, store).ok()) << CheckExpectedTensors(c, store).ToString();
  auto w = LoadHostWeights(c, store);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE(w->layers[1].engram.has_value());
  EXPECT_FALSE(w->layers[0].engram.has_value());
  const EngramWeights& e = *w->layers[1].engram;
  EXPECT_EQ(e.table.dtype, DType::kF8E4M3);
  EXPECT_EQ(e.table.dim(1), 32);
  EXPECT_EQ(e.table_scale.dtype, DType::kF8E8M0);
  EXPECT_EQ(e.table_scale.shape, (std::vector<int64_t>{e.table.dim(0), 1}));
  EXPECT_EQ(e.wkv.dtype, DType::kF8E4M3);
  EXPECT_EQ(e.wkv.shape, (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(e.wkv_scale.dtype, DType::kF8E8M0);
  EXPECT_EQ(e.wkv_scale.shape, (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(e.q_weight.shape, (std::vector<int64_t>{1, 64}));
  EXPECT_EQ(e.k_weight.shape, (std::vector<int64_t>{1, 64}));
  EXPECT_TRUE(e.value_w.empty());
  EXPECT_TRUE(e.key_w.empty());
  EXPECT_TRUE(e.conv_w.empty());
  EXPECT_TRUE(e.norm_key.empty());
}

TEST(LoadHostWeightsV41, Bf16TablesNeedNoScales) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  const TensorStore store = StoreFor(c, DType::kBF16, DType::kBF16);
  EXPECT_FALSE(store.Has(kL1 + "embed.scale"));
  EXPECT_FALSE(store.Has(kL1 + "wkv.scale"));
  auto w = LoadHostWeights(c, store);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const EngramWeights& e = *w->layers[1].engram;
  EXPECT_EQ(e.table.dtype, DType::kBF16);
  EXPECT_TRUE(e.table_scale.empty());
  EXPECT_TRUE(e.wkv_scale.empty());
  // FP8 table with a BF16 wkv (and the other way round): each scale follows its own tensor.
  const TensorStore mixed = StoreFor(c, DType::kF8E4M3, DType::kBF16);
  EXPECT_TRUE(mixed.Has(kL1 + "embed.scale"));
  EXPECT_FALSE(mixed.Has(kL1 + "wkv.scale"));
  EXPECT_TRUE(LoadHostWeights(c, mixed).ok());
  EXPECT_TRUE(LoadHostWeights(c, StoreFor(c, DType::kF32, DType::kF8E4M3)).ok());
}

// Both checks (at open and at load) report the same error.
void ExpectRefused(const ModelConfig& c, const TensorStore& store, StatusCode code,
                   const std::string& message) {
  const Status check = CheckExpectedTensors(c, store);
  EXPECT_EQ(check.code(), code) << check.ToString();
  EXPECT_EQ(check.message(), message);
  auto w = LoadHostWeights(c, store);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), code);
  EXPECT_EQ(w.status().message(), message);
}

TEST(LoadHostWeightsV41, MissingScaleNamesTheShapeItNeeds) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  TensorStore store = CopyStore(StoreFor(c), kL1 + "wkv.scale");
  ExpectRefused(c, store, StatusCode::kNotFound,
                "<in-memory>: model.layers.1.engram.wkv.scale: missing; "
                "model.layers.1.engram.wkv.weight is F8_E4M3, which needs its F8_E8M0 scales "
                "[4, 8] (one per 32x32 block)");
  const int64_t rows = StoreFor(c).Info(kL1 + "embed.weight")->shape[0];
  store = CopyStore(StoreFor(c), kL1 + "embed.scale");
  ExpectRefused(c, store, StatusCode::kNotFound,
                fmt::format("<in-memory>: model.layers.1.engram.embed.scale: missing; "
                            "model.layers.1.engram.embed.weight is F8_E4M3, which needs its "
                            "F8_E8M0 scales [{}, 1] (one per 32 values of each row)",
                            rows));
}

TEST(LoadHostWeightsV41, ScaleWithTheWrongDtype) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  const TensorStore fp8 = StoreFor(c);
  const auto shape = fp8.Info(kL1 + "embed.scale")->shape;
  TensorStore store = CopyStore(fp8, "", kL1 + "embed.scale", HostTensor(DType::kBF16, shape));
  ExpectRefused(c, store, StatusCode::kInvalidArgument,
                "<in-memory>: tensor model.layers.1.engram.embed.scale has dtype BF16, expected "
                "F8_E8M0 (the block scales of F8_E4M3 model.layers.1.engram.embed.weight)");
  store = CopyStore(fp8, "", kL1 + "wkv.scale", HostTensor(DType::kU8, {4, 8}));
  ExpectRefused(c, store, StatusCode::kInvalidArgument,
                "<in-memory>: tensor model.layers.1.engram.wkv.scale has dtype U8, expected "
                "F8_E8M0 (the block scales of F8_E4M3 model.layers.1.engram.wkv.weight)");
}

TEST(LoadHostWeightsV41, ScaleShapeMismatch) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  TensorStore store =
      CopyStore(StoreFor(c), "", kL1 + "wkv.scale", HostTensor(DType::kF8E8M0, {8, 4}));
  ExpectRefused(c, store, StatusCode::kInvalidArgument,
                "<in-memory>: tensor model.layers.1.engram.wkv.scale has shape [8, 4], expected "
                "[4, 8] (one F8_E8M0 scale per 32x32 block of model.layers.1.engram.wkv.weight "
                "[128, 256])");
  const TensorStore fp8 = StoreFor(c);
  const int64_t rows = fp8.Info(kL1 + "embed.weight")->shape[0];
  store = CopyStore(fp8, "", kL1 + "embed.scale", HostTensor(DType::kF8E8M0, {rows, 2}));
  ExpectRefused(c, store, StatusCode::kInvalidArgument,
                fmt::format("<in-memory>: tensor model.layers.1.engram.embed.scale has shape "
                            "[{0}, 2], expected [{0}, 1] (one F8_E8M0 scale per 32 values of "
                            "each row of model.layers.1.engram.embed.weight [{0}, 32])",
                            rows));
}

TEST(LoadHostWeightsV41, ScaleBesideANonFp8TensorRefused) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  TensorStore store = StoreFor(c, DType::kBF16, DType::kBF16);
  store.AddInMemory(kL1 + "wkv.scale", HostTensor(DType::kF8E8M0, {4, 8}));
  ExpectRefused(c, store, StatusCode::kInvalidArgument,
                "<in-memory>: tensor model.layers.1.engram.wkv.scale is present, but "
                "model.layers.1.engram.wkv.weight is BF16, not F8_E4M3: E8M0 scales belong "
                "only to FP8 tensors, and these would be ignored (was the tensor dequantized "
                "without dropping its scales?)");
}

TEST(LoadHostWeightsV41, Fp8OnlyForTheEngramTableAndWkv) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  TensorStore store = CopyStore(StoreFor(c), "", q, HostTensor(DType::kF8E4M3, {64, 64}));
  // A backbone Linear weight may be F8_E4M3 only as config.json's quantization_config says.
  ExpectRefused(c, store, StatusCode::kInvalidArgument,
                "<in-memory>: tensor model.layers.0.self_attn.q_proj.weight has dtype F8_E4M3, "
                "but config.json has no quantization_config: a quantized Linear weight needs one "
                "saying how its weight_scale_inv blocks are laid out ({\"quant_method\": "
                "\"fp8\", \"weight_block_size\": [128, 128], \"activation_scheme\": "
                "\"dynamic\"})");
  store = CopyStore(StoreFor(c), "", kL1 + "q_weight", HostTensor(DType::kF8E4M3, {1, 64}));
  EXPECT_NE(CheckExpectedTensors(c, store).message().find("q_weight has dtype F8_E4M3"),
            std::string::npos);
  // An E8M0 tensor is only ever a scale.
  const int64_t rows = StoreFor(c).Info(kL1 + "embed.weight")->shape[0];
  store = CopyStore(StoreFor(c, DType::kBF16), "", kL1 + "embed.weight",
                    HostTensor(DType::kF8E8M0, {rows, 32}));
  ExpectRefused(c, store, StatusCode::kInvalidArgument,
                "<in-memory>: tensor model.layers.1.engram.embed.weight has dtype F8_E8M0, "
                "expected a float type (F32, F16, BF16 or F8_E4M3 with F8_E8M0 scales)");
}

TEST(LoadHostWeightsV41, Fp8TableRowsMustBeWholeBlocks) {
  nlohmann::json j = V41ConfigJson();
  j["engram_head_dim"] = 48;
  const ModelConfig c = ParseConfig(j);
  EXPECT_TRUE(LoadHostWeights(c, StoreFor(c, DType::kBF16, DType::kF8E4M3)).ok());
  ExpectRefused(c, StoreFor(c), StatusCode::kInvalidArgument,
                "<in-memory>: tensor model.layers.1.engram.embed.weight is F8_E4M3, but its rows "
                "have 48 values (engram_head_dim), not a multiple of 32: FP8 rows carry one "
                "E8M0 scale per 32 values");
}

// The paper layout takes FP8 tables by the same rule (multi_head_embedding.embedding.scale).
TEST(LoadHostWeights, PaperLayoutFp8Table) {
  ModelConfig c = Synth("tiny").config;
  c.engram->n_embed_per_ngram = 128;  // Dh = 32
  const std::string table = EngramTableName(*c.engram, 1);
  const std::string scale = EngramScaleName(*c.engram, 1);
  TensorStore store = StoreFor(c, DType::kF8E4M3);
  ASSERT_TRUE(store.Has(scale));
  auto w = LoadHostWeights(c, store);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->layers[1].engram->table.dtype, DType::kF8E4M3);
  EXPECT_EQ(w->layers[1].engram->table_scale.dtype, DType::kF8E8M0);
  EXPECT_EQ(w->layers[1].engram->table_scale.dim(1), 1);
  EXPECT_FALSE(w->layers[1].engram->value_w.empty());
  EXPECT_TRUE(w->layers[1].engram->wkv.empty());
  EXPECT_EQ(CheckExpectedTensors(c, CopyStore(store, scale)).code(), StatusCode::kNotFound);
  // The tiny preset's 8-value rows cannot be FP8.
  const ModelConfig tiny = Synth("tiny").config;
  EXPECT_NE(CheckExpectedTensors(tiny, StoreFor(tiny))
                .message()
                .find("rows have 8 values (engram.n_embed_per_ngram / n_head_per_ngram), not a "
                      "multiple of 32"),
            std::string::npos);
}

// In a file, the messages name the file the tensor is in.
TEST(CheckExpectedTensorsV41, ErrorsNameTheFile) {
  const ModelConfig c = ParseConfig(V41ConfigJson());
  TempDir dir;
  testutil::WriteModelDir(c, dir.path());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_TRUE(CheckExpectedTensors(c, *store).ok()) << CheckExpectedTensors(c, *store).ToString();
  nlohmann::json j = V41ConfigJson();
  j["engram_head_dim"] = 64;  // the file's tensors are for 32
  const Status st = CheckExpectedTensors(ParseConfig(j), *store);
  EXPECT_EQ(
      st.message().rfind(
          dir / "model.safetensors" + ": tensor model.layers.1.engram.embed.weight has shape [", 0),
      0u)
      << st.ToString();

  TempDir bf16;
  testutil::WriteModelDir(c, bf16.path(), DType::kBF16, DType::kF8E4M3);
  auto s2 = TensorStore::OpenDirectory(bf16.path());
  ASSERT_TRUE(s2.ok());
  TensorStore no_scale = CopyStore(*s2, kL1 + "wkv.scale");  // in memory, copied views
  EXPECT_EQ(CheckExpectedTensors(c, *s2).code(), StatusCode::kOk);
  EXPECT_NE(CheckExpectedTensors(c, no_scale).message().find("wkv.scale: missing"),
            std::string::npos);
}

}  // namespace
}  // namespace engram
