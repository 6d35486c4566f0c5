// Quantized checkpoints end to end on the CPU engine: a synthetic Hugging Face fine-grained FP8
// checkpoint (F8_E4M3 Linear weights + F32 weight_scale_inv, quantization_config "fp8") and an
// engram_int8 one, made here from synth:tiny's weights. The FP8 model must match the float64
// reference of its own dequantized weights (the reference dequantizes weight_scale_inv itself)
// as closely as a float model matches its reference; the int8 files must run bit-identical to
// load-time int8 quantization of the float weights; every malformed checkpoint is refused
// naming the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <span>

#include "common/dtype.h"
#include "common/int8_block.h"
#include "engine_steps.h"
#include "model/model_files.h"
#include "reference_forward.h"
#include "runtime/engine.h"

namespace engram {
namespace {

// The Linear weights: the backbone's, the lm_head, and (with `engram`) the Engram module's
// value_proj and key_projs.0.
bool IsLinear(const std::string& name, bool engram) {
  if (name.find(".engram.") != std::string::npos) {
    return engram && (name.ends_with("value_proj.weight") || name.ends_with("key_projs.0.weight"));
  }
  return name.ends_with("_proj.weight") || name == "lm_head.weight";
}

// synth:tiny with its Linear weights (and lm_head) quantized: "fp8" in [bn, bk] blocks (scale =
// amax / 448, codes round to nearest even), or "engram_int8" ([1, 32], QuantizeInt8Block).
// engram = false leaves the Engram projections in BF16, as pack quantize wrote them before
// 2026-12-03. Every other tensor is shared with the float model.
ModelFiles Quantized(const std::string& method, int64_t bn, int64_t bk, bool engram = true) {
  auto f = OpenModel("synth:tiny");
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  ModelFiles files = std::move(f).value();
  TensorStore store;
  for (const std::string& name : files.store.Names()) {
    Tensor t = *files.store.Get(name);
    if (!IsLinear(name, engram)) {
      store.AddInMemory(name, t);
      continue;
    }
    const int64_t O = t.dim(0), I = t.dim(1);
    std::vector<float> w(static_cast<size_t>(O * I));
    ConvertToF32(t.dtype, t.data, w.data(), w.size());
    const bool fp8 = method == "fp8";
    Tensor q = HostTensor(fp8 ? DType::kF8E4M3 : DType::kI8, {O, I});
    const int64_t rows = (O + bn - 1) / bn, cols = (I + bk - 1) / bk;
    Tensor s = HostTensor(DType::kF32, {rows, cols});
    for (int64_t br = 0; br < rows; ++br) {
      for (int64_t bc = 0; bc < cols; ++bc) {
        const int64_t r1 = std::min(O, (br + 1) * bn), c1 = std::min(I, (bc + 1) * bk);
        if (!fp8) {
          s.ptr<float>()[br * cols + bc] =
              QuantizeInt8Block(&w[br * I + bc * bk], static_cast<int>(c1 - bc * bk),
                                q.ptr<int8_t>() + br * I + bc * bk);
          continue;
        }
        float amax = 0.f;
        for (int64_t r = br * bn; r < r1; ++r) {
          for (int64_t c = bc * bk; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * I + c]));
        }
        const float scale = amax / 448.f;
        s.ptr<float>()[br * cols + bc] = scale;
        for (int64_t r = br * bn; r < r1; ++r) {
          for (int64_t c = bc * bk; c < c1; ++c) {
            q.ptr<uint8_t>()[r * I + c] = scale > 0 ? F32ToE4M3(w[r * I + c] / scale) : 0;
          }
        }
      }
    }
    store.AddInMemory(name, q);
    store.AddInMemory(name + "_scale_inv", s);
  }
  files.store = std::move(store);
  WeightQuantization wq;
  wq.quant_method = method;
  wq.block_n = bn;
  wq.block_k = bk;
  files.config.quantization = wq;
  return files;
}

Result<std::unique_ptr<Engine>> Open(ModelFiles files, const std::string& weights) {
  EngineOptions opt;
  opt.max_seqs = 4;
  opt.kv_tokens = 1024;
  opt.backend.threads = 2;
  opt.backend.weights = weights;
  return Engine::Create(std::move(files), opt);
}

std::vector<float> Logits(Engine& e, const std::vector<int32_t>& ids, size_t chunk) {
  return testing::ChunkedLogits(e, ids, chunk);
}

std::vector<int32_t> Prompt(int64_t vocab) {
  std::vector<int32_t> ids(40);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 37 + 11) % vocab);
  ids[20] = ids[17];
  return ids;
}

// Tolerance: as the float engines' own (engine_test: 1e-4); the FP8 kernels add only the F32
// rounding of each dequantized weight.
TEST(QuantizedModel, Fp8CheckpointMatchesFloat64ReferenceOfItsDequantizedWeights) {
  for (auto [bn, bk] : {std::pair<int64_t, int64_t>{128, 128}, {16, 32}}) {
    ModelFiles files = Quantized("fp8", bn, bk);
    ASSERT_TRUE(CheckExpectedTensors(files.config, files.store).ok())
        << CheckExpectedTensors(files.config, files.store).ToString();
    auto weights = LoadHostWeights(files.config, files.store);
    ASSERT_TRUE(weights.ok()) << weights.status().ToString();
    auto hasher = NgramHasher::Create(*files.config.engram, files.compression);
    ASSERT_TRUE(hasher.ok());
    const auto ids = Prompt(files.config.vocab_size);
    const auto ref = testing::ReferenceForward(files.config, *weights, &*hasher, ids);
    auto engine = Open(std::move(files), "auto");
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    EXPECT_EQ((*engine)->weight_format(), "fp8");
    const auto prefill = Logits(**engine, ids, ids.size());
    const double err = testing::RelativeError(prefill, ref);
    std::printf("fp8 [%lld, %lld] vs float64 reference of the dequantized weights: %.3g\n",
                static_cast<long long>(bn), static_cast<long long>(bk), err);
    EXPECT_LE(err, 1e-4);
    // Decode (the direct kernels) equals prefill (the F32 tiles).
    const auto decode = Logits(**engine, ids, 1);
    EXPECT_LE(testing::RelativeError(decode, std::vector<double>(prefill.begin(), prefill.end())),
              1e-5);
  }
}

// The quantization error itself, against the float model's reference (documented in
// docs/perf.md for `small`): FP8 [128, 128] blocks within 5% relative RMS on tiny.
TEST(QuantizedModel, Fp8CheckpointStaysNearTheFloatModel) {
  auto f = OpenModel("synth:tiny");
  ASSERT_TRUE(f.ok());
  auto float_engine = Open(std::move(f).value(), "auto");
  ASSERT_TRUE(float_engine.ok());
  auto fp8 = Open(Quantized("fp8", 128, 128), "auto");
  ASSERT_TRUE(fp8.ok());
  const auto ids = Prompt(512);
  const auto a = Logits(**fp8, ids, ids.size());
  const auto b = Logits(**float_engine, ids, ids.size());
  const double err = testing::RelativeError(a, std::vector<double>(b.begin(), b.end()));
  std::printf("fp8 vs bf16 engine: relative RMS logit error %.4f\n", err);
  EXPECT_LE(err, 0.05);
}

// int8 files (the Engram projections included) run as they are with weights "auto" and
// "int8", bit-identical to float files quantized at load.
TEST(QuantizedModel, Int8FilesRunBitIdenticalToLoadTimeQuantization) {
  auto files = Quantized("engram_int8", 1, 32);
  ASSERT_TRUE(CheckExpectedTensors(files.config, files.store).ok())
      << CheckExpectedTensors(files.config, files.store).ToString();
  auto as_files = Open(Quantized("engram_int8", 1, 32), "auto");
  ASSERT_TRUE(as_files.ok()) << as_files.status().ToString();
  EXPECT_EQ((*as_files)->weight_format(), "int8");
  auto int8_files = Open(std::move(files), "int8");
  ASSERT_TRUE(int8_files.ok()) << int8_files.status().ToString();
  auto f = OpenModel("synth:tiny");
  ASSERT_TRUE(f.ok());
  auto at_load = Open(std::move(f).value(), "int8");
  ASSERT_TRUE(at_load.ok());
  EXPECT_EQ((*at_load)->weight_format(), "int8");
  const auto ids = Prompt(512);
  const auto want = Logits(**at_load, ids, 7);
  EXPECT_EQ(Logits(**int8_files, ids, 7), want);
  EXPECT_EQ(Logits(**as_files, ids, 7), want);
}

// Files with BF16 Engram projections beside int8 backbone weights (pack quantize before
// 2026-12-03) still load: "auto" runs the projections in BF16 and says "mixed"; "int8"
// quantizes them at load, bit-identical to the files that store them quantized.
TEST(QuantizedModel, Int8FilesWithFloatEngramProjectionsLoad) {
  auto older = Quantized("engram_int8", 1, 32, /*engram=*/false);
  ASSERT_TRUE(CheckExpectedTensors(older.config, older.store).ok())
      << CheckExpectedTensors(older.config, older.store).ToString();
  auto as_files = Open(std::move(older), "auto");
  ASSERT_TRUE(as_files.ok()) << as_files.status().ToString();
  EXPECT_EQ((*as_files)->weight_format(), "mixed");
  auto as_int8 = Open(Quantized("engram_int8", 1, 32, /*engram=*/false), "int8");
  ASSERT_TRUE(as_int8.ok()) << as_int8.status().ToString();
  EXPECT_EQ((*as_int8)->weight_format(), "int8");
  auto current = Open(Quantized("engram_int8", 1, 32), "auto");
  ASSERT_TRUE(current.ok()) << current.status().ToString();
  const auto ids = Prompt(512);
  const auto want = Logits(**current, ids, 7);
  EXPECT_EQ(Logits(**as_int8, ids, 7), want);
  const auto mixed = Logits(**as_files, ids, 7);
  for (float v : mixed) ASSERT_TRUE(std::isfinite(v));
  EXPECT_NE(mixed, want);  // BF16 projections: not the int8 result
}

TEST(QuantizedModel, WeightsOptionsConvertFp8Files) {
  for (const char* mode : {"bf16", "int8"}) {
    auto e = Open(Quantized("fp8", 128, 128), mode);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_EQ((*e)->weight_format(), mode);
    const auto logits = Logits(**e, Prompt(512), 40);
    for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  }
}

// Each malformed checkpoint fails at load with a message naming the tensor (and the file).
TEST(QuantizedModel, MalformedCheckpointsAreRefusedNamingTheTensor) {
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  auto expect_refused = [](ModelFiles files, const std::string& want) {
    const Status check = CheckExpectedTensors(files.config, files.store);
    auto e = Open(std::move(files), "auto");
    ASSERT_FALSE(e.ok()) << want;
    EXPECT_NE(e.status().message().find(want), std::string::npos) << e.status().message();
    if (!check.ok()) {
      EXPECT_NE(check.message().find(want), std::string::npos) << check.message();
    }
  };
  {  // the scale is missing
    ModelFiles f = Quantized("fp8", 128, 128);
    TensorStore s;
    for (const auto& n : f.store.Names()) {
      if (n != q + "_scale_inv") s.AddInMemory(n, *f.store.Get(n));
    }
    f.store = std::move(s);
    expect_refused(std::move(f), q + "_scale_inv: missing; " + q + " is F8_E4M3");
  }
  {  // an Engram projection's scale is missing
    const std::string v = "model.layers.1.engram.value_proj.weight";
    ModelFiles f = Quantized("engram_int8", 1, 32);
    ASSERT_TRUE(f.store.Has(v + "_scale_inv"));
    TensorStore s;
    for (const auto& n : f.store.Names()) {
      if (n != v + "_scale_inv") s.AddInMemory(n, *f.store.Get(n));
    }
    f.store = std::move(s);
    expect_refused(std::move(f), v + "_scale_inv: missing; " + v + " is I8");
  }
  {  // scale of the wrong shape / dtype
    for (Tensor bad : {HostTensor(DType::kF32, {2, 1}), HostTensor(DType::kF16, {1, 1})}) {
      ModelFiles f = Quantized("fp8", 128, 128);
      f.store.AddInMemory(q + "_scale_inv", bad);
      expect_refused(std::move(f), "tensor " + q + "_scale_inv has " +
                                       (bad.dtype == DType::kF16 ? "dtype F16" : "shape [2, 1]"));
    }
  }
  {  // FP8 weights without quantization_config
    ModelFiles f = Quantized("fp8", 128, 128);
    f.config.quantization.reset();
    expect_refused(std::move(f), "has dtype F8_E4M3, but config.json has no quantization_config");
  }
  {  // a block size the CPU kernels cannot hold
    ModelFiles f = Quantized("fp8", 8, 128);
    expect_refused(std::move(f), "lm_head.weight: FP8 weight_block_size [8, 128] cannot run");
  }
  {  // a negative scale
    ModelFiles f = Quantized("fp8", 128, 128);
    Tensor s = HostTensor(DType::kF32, {1, 1});
    s.ptr<float>()[0] = -0.5f;
    f.store.AddInMemory(q + "_scale_inv", s);
    expect_refused(std::move(f), q + "_scale_inv holds -0.5 at [0, 0]");
  }
  {  // a NaN code
    ModelFiles f = Quantized("fp8", 128, 128);
    Tensor w = HostTensor(DType::kF8E4M3, f.store.Info(q)->shape);
    std::memcpy(w.data, f.store.Get(q)->data, w.nbytes());
    w.ptr<uint8_t>()[70] = 0x7f;
    f.store.AddInMemory(q, w);
    expect_refused(std::move(f), q + ": holds the E4M3 NaN code 0x7f at [1, 6]");
  }
  {  // a scale beside a float weight
    auto f = OpenModel("synth:tiny");
    ASSERT_TRUE(f.ok());
    WeightQuantization wq;
    wq.quant_method = "fp8";
    wq.block_n = wq.block_k = 128;
    f->config.quantization = wq;
    f->store.AddInMemory(q + "_scale_inv", HostTensor(DType::kF32, {1, 1}));
    expect_refused(std::move(f).value(),
                   "tensor " + q + "_scale_inv is present, but " + q + " is BF16, not F8_E4M3");
  }
  {  // int8 weights declared as fp8
    ModelFiles f = Quantized("engram_int8", 1, 32);
    f.config.quantization->quant_method = "fp8";
    expect_refused(std::move(f), "has dtype I8, but quantization_config.quant_method \"fp8\"");
  }
}

}  // namespace
}  // namespace engram
