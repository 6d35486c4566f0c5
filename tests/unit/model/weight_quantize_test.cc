// engram pack quantize --weights: the Linear weights re-stored as int8 (bit-identical to the CPU
// backend's load-time quantization) or fp8 (every code the nearest E4M3 value), the file format
// (names, dtypes, shapes, config.json), every other tensor byte-identical, lm_head handling,
// sharded inputs, checksums, and each refusal.
#include "model/weight_quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "../../support/temp_dir.h"
#include "common/dtype.h"
#include "kernels/cpu/linear_int8.h"
#include "kernels/cpu/thread_pool.h"
#include "model/model_files.h"
#include "model/synth.h"
#include "model/table_checksum.h"
#include "model/weights.h"

namespace engram {
namespace {

using testutil::ReadFile;
using testutil::TempDir;
using testutil::WriteFile;
using ordered_json = nlohmann::ordered_json;

// ---- A hand-made model: synth's tiny with intermediate_size 100 (int8 rows end in a partial
// block of 4, fp8 in partial row and column blocks), F32 weights except gate (BF16) and up (F16),
// crafted blocks, and any number of shards.

constexpr const char* kQ0 = "model.layers.0.self_attn.q_proj.weight";
constexpr const char* kK0 = "model.layers.0.self_attn.k_proj.weight";
constexpr const char* kDown0 = "model.layers.0.mlp.down_proj.weight";

struct Custom {
  int shards = 1;
  DType q0_dtype = DType::kF32;        // I8 / F8_E4M3: an already quantized weight
  bool nan = false;                    // a NaN in model.layers.1.mlp.up_proj.weight
  bool stray_scale = false;            // a q_proj.weight_scale_inv beside the float q_proj
  std::vector<std::string> checksums;  // engram_checksums.json lists these (empty: none)
};

float Hash01(uint64_t x) {  // splitmix64 -> [0, 1)
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return static_cast<float>((x ^ (x >> 31)) >> 40) / static_cast<float>(1 << 24);
}

// The values of tensor `e` (index `t` among the tensors).
std::vector<float> Values(const ExpectedTensor& e, size_t t, const Custom& c) {
  int64_t n = 1;
  for (int64_t d : e.shape) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    v[i] = e.role == TensorRole::kNorm ? 1.f : (Hash01(t * 1000003 + i) - 0.5f) * 0.2f;
  }
  if (e.name == kQ0) {
    // One fp8 block (the whole [64, 64]) of scale_inv 1: amax 448, then every midpoint between
    // two E4M3 values of either sign (ties: the code of even mantissa wins), and grid values.
    v[0] = 448.f;
    for (int code = 0; code < 0x7e; ++code) {
      const float mid = (E4M3ToF32(code) + E4M3ToF32(code + 1)) / 2;
      v[1 + 2 * code] = mid;
      v[2 + 2 * code] = -mid;
      v[300 + code] = E4M3ToF32(code);
    }
  }
  if (e.name == kK0) {
    // An int8 block of scale 1 (amax 127) with ties at .5: round to nearest even.
    const float row[] = {127.f, 0.5f, 1.5f, 2.5f, 3.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f};
    std::copy(std::begin(row), std::end(row), v.begin());
  }
  if (e.name == "lm_head.weight") {
    std::fill(v.begin() + 384 * 64, v.end(), 0.f);  // an all-zero fp8 row block and int8 rows
  }
  if (c.nan && e.name == "model.layers.1.mlp.up_proj.weight") v[70] = std::nanf("");
  return v;
}

DType DTypeOf(const ExpectedTensor& e, const Custom& c) {
  if (e.name == kQ0) return c.q0_dtype;
  if (e.name.find("gate_proj") != std::string::npos) return DType::kBF16;
  if (e.name.find("up_proj") != std::string::npos) return DType::kF16;
  return DType::kF32;
}

std::vector<uint8_t> Encode(const std::vector<float>& v, DType t) {
  std::vector<uint8_t> out(v.size() * DTypeSize(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::kF32) {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else if (t == DType::kBF16 || t == DType::kF16) {
      const uint16_t h = t == DType::kBF16 ? F32ToBf16(v[i]) : F32ToF16(v[i]);
      std::memcpy(&out[2 * i], &h, 2);
    } else {
      out[i] = t == DType::kF8E4M3 ? F32ToE4M3(v[i]) : 0;
    }
  }
  return out;
}

ModelConfig CustomConfig() {
  SynthOptions o;
  o.preset = "tiny";
  auto config = SynthConfig(o);
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  config->intermediate_size = 100;
  return *config;
}

std::string WriteCustom(const TempDir& dir, const Custom& c, const std::string& name = "in") {
  const std::string path = dir.path() + "/" + name;
  std::filesystem::create_directories(path);
  const ModelConfig config = CustomConfig();
  WriteFile(path + "/config.json", config.ToJson().dump(2) + "\n");
  auto expected = ExpectedTensors(config);
  EXPECT_TRUE(expected.ok());
  std::vector<std::vector<SafetensorsWriter::Spec>> specs(static_cast<size_t>(c.shards));
  std::vector<std::vector<std::vector<uint8_t>>> data(static_cast<size_t>(c.shards));
  nlohmann::json weight_map = nlohmann::json::object();
  auto file = [&](int s) {
    return c.shards == 1 ? std::string("model.safetensors")
                         : "model-0000" + std::to_string(s + 1) + "-of-0000" +
                               std::to_string(c.shards) + ".safetensors";
  };
  for (size_t t = 0; t < expected->size(); ++t) {
    const ExpectedTensor& e = (*expected)[t];
    if (!e.scale_of.empty()) continue;  // scales: only beside FP8 tensors, none here
    const int s = static_cast<int>(t * static_cast<size_t>(c.shards) / expected->size());
    const DType type = DTypeOf(e, c);
    specs[s].push_back({e.name, type, e.shape});
    data[s].push_back(Encode(Values(e, t, c), type));
    weight_map[e.name] = file(s);
  }
  if (c.stray_scale) {
    specs[0].push_back({std::string(kQ0) + "_scale_inv", DType::kF32, {1, 1}});
    data[0].push_back(std::vector<uint8_t>(4, 0));
  }
  for (int s = 0; s < c.shards; ++s) {
    auto w = SafetensorsWriter::Create(path + "/" + file(s), specs[s]);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    for (const auto& bytes : data[s]) EXPECT_TRUE((*w)->Append(bytes.data(), bytes.size()).ok());
    EXPECT_TRUE((*w)->Finish().ok());
  }
  if (c.shards > 1) {
    WriteFile(
        path + "/model.safetensors.index.json",
        nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump(2));
  }
  WriteFile(path + "/tokenizer_config.json", "{\"note\": \"copied as it is\"}\n");
  if (!c.checksums.empty()) {
    EXPECT_TRUE(WriteTableChecksums(path, 1, c.checksums, 4096).ok());
  }
  return path;
}

WeightQuantizeOptions Options(WeightFormat f) {
  WeightQuantizeOptions o;
  o.format = f;
  o.threads = 3;
  o.progress = false;
  return o;
}

std::vector<float> ToF32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  ConvertToF32(t.dtype, t.data, out.data(), out.size());
  return out;
}

// The Linear weights of `config` that are quantized: the backbone's, the Engram module's two
// projections, and the lm_head unless kept.
std::vector<std::string> LinearNames(const ModelConfig& config, bool keep_lm_head) {
  std::vector<std::string> names;
  auto expected = ExpectedTensors(config);
  EXPECT_TRUE(expected.ok());
  for (const ExpectedTensor& e : *expected) {
    if (e.role == TensorRole::kLinear || e.role == TensorRole::kOutputLinear ||
        e.role == TensorRole::kEngramProj || (e.role == TensorRole::kLmHead && !keep_lm_head)) {
      names.push_back(e.name);
    }
  }
  return names;
}

// Every tensor of `a` that is not in `quantized` is in `b` with the same dtype, shape and bytes.
void ExpectOthersIdentical(const TensorStore& a, const TensorStore& b,
                           const std::vector<std::string>& quantized) {
  const std::set<std::string> q(quantized.begin(), quantized.end());
  for (const std::string& name : a.Names()) {
    if (q.count(name)) continue;
    auto x = a.Get(name), y = b.Get(name);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    EXPECT_EQ(x->dtype, y->dtype) << name;
    EXPECT_EQ(x->shape, y->shape) << name;
    ASSERT_EQ(x->nbytes(), y->nbytes()) << name;
    EXPECT_EQ(std::memcmp(x->data, y->data, x->nbytes()), 0) << name;
  }
}

// The output config: the input's keys in their order, then quantization_config.
ordered_json ExpectConfigExtended(const std::string& in, const std::string& out) {
  const ordered_json a = ordered_json::parse(ReadFile(in + "/config.json"));
  ordered_json b = ordered_json::parse(ReadFile(out + "/config.json"));
  EXPECT_TRUE(b.contains("quantization_config"));
  EXPECT_EQ(std::prev(b.end()).key(), "quantization_config");
  const ordered_json q = b["quantization_config"];
  b.erase("quantization_config");
  EXPECT_EQ(a.dump(), b.dump());  // same keys, same order, same values
  return q;
}

// E4M3's nearest value to x by search over the grid, ties to the even code (saturating).
uint8_t NearestE4M3(float x) {
  const double a = std::fabs(static_cast<double>(x));
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int code = 0; code <= 0x7e; ++code) {
    const double d = std::fabs(E4M3ToF32(static_cast<uint8_t>(code)) - a);
    if (d < best_d || (d == best_d && code % 2 == 0)) {
      best = code;
      best_d = d;
    }
  }
  return static_cast<uint8_t>((std::signbit(x) ? 0x80 : 0) | best);
}

TEST(WeightQuantize, F32ToE4M3RoundsToNearestEvenAndSaturates) {
  for (int code = 0; code < 0x7e; ++code) {
    const float lo = E4M3ToF32(code), hi = E4M3ToF32(code + 1), mid = (lo + hi) / 2;
    const uint8_t even = static_cast<uint8_t>(code % 2 == 0 ? code : code + 1);
    EXPECT_EQ(F32ToE4M3(mid), even) << "midpoint of " << code;
    EXPECT_EQ(F32ToE4M3(-mid), even | 0x80) << "midpoint of -" << code;
    EXPECT_EQ(F32ToE4M3(std::nextafter(mid, 0.f)), code);
    EXPECT_EQ(F32ToE4M3(std::nextafter(mid, 1e9f)), code + 1);
    EXPECT_EQ(F32ToE4M3(lo), code);
  }
  for (const float big : {448.f, 449.f, 464.f, 480.f, 1e30f, INFINITY}) {
    EXPECT_EQ(F32ToE4M3(big), 0x7e) << big;
    EXPECT_EQ(F32ToE4M3(-big), 0xfe) << big;
  }
  for (uint32_t i = 0; i < 200000; ++i) {
    const float x = (Hash01(i) - 0.5f) * std::ldexp(1.f, static_cast<int>(i % 24) - 12);
    ASSERT_EQ(F32ToE4M3(x), NearestE4M3(x)) << x;
  }
}

// The same quantization with 1 KiB windows on one thread: many windows per weight, int8
// scales in a second pass for the weights whose scales exceed a window (lm_head), kept from the
// codes pass for the others; the files must not change.
void ExpectWindowsDoNotMatter(const std::string& in, const std::string& out, WeightFormat f) {
  WeightQuantizeOptions o = Options(f);
  o.threads = 1;
  o.window_bytes = 1024;
  const std::string small = out + "-small-windows";
  auto report = QuantizeModelWeights(in, small, o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  for (const auto& entry : std::filesystem::directory_iterator(out)) {
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(ReadFile(small + "/" + name) == ReadFile(entry.path().string())) << name;
  }
}

// A quantized weight of the output beside its source.
struct QuantizedWeight {
  std::string name;
  Tensor src, codes, scales;
};

// Every weight of `names` as source (in `a`) and codes and scales (in `b`), their dtypes and
// shapes checked for `f`: codes [O, I], scales F32 [ceil(O / block_n), ceil(I / block_k)].
std::vector<QuantizedWeight> Quantized(const TensorStore& a, const TensorStore& b,
                                       const std::vector<std::string>& names, WeightFormat f) {
  const int64_t bn = f == WeightFormat::kFp8 ? 128 : 1, bk = f == WeightFormat::kFp8 ? 128 : 32;
  std::vector<QuantizedWeight> out;
  for (const std::string& name : names) {
    auto src = a.Get(name);
    auto codes = b.Get(name);
    auto scales = b.Get(WeightScaleInvName(name));
    EXPECT_TRUE(src.ok() && codes.ok() && scales.ok()) << name;
    if (!src.ok() || !codes.ok() || !scales.ok()) continue;
    EXPECT_EQ(codes->dtype, f == WeightFormat::kFp8 ? DType::kF8E4M3 : DType::kI8) << name;
    EXPECT_EQ(codes->shape, src->shape) << name;
    EXPECT_EQ(scales->dtype, DType::kF32) << name;
    const std::vector<int64_t> shape = {(src->dim(0) + bn - 1) / bn, (src->dim(1) + bk - 1) / bk};
    EXPECT_EQ(scales->shape, shape) << name;
    if (scales->shape == shape) out.push_back({name, *src, *codes, *scales});
  }
  EXPECT_EQ(out.size(), names.size());
  return out;
}

TEST(WeightQuantize, Int8IsBitIdenticalToLoadTimeQuantization) {
  TempDir dir;
  const std::string in = WriteCustom(dir, {}), out = dir.path() + "/out";
  auto report = QuantizeModelWeights(in, out, Options(WeightFormat::kInt8));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const ModelConfig config = CustomConfig();
  const std::vector<std::string> linear = LinearNames(config, false);
  EXPECT_EQ(report->weights, 24);  // 3 layers x 7, the Engram layer's key and value, lm_head
  EXPECT_EQ(linear.size(), 24u);
  auto a = TensorStore::OpenDirectory(in);
  auto b = TensorStore::OpenDirectory(out);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
  ThreadPool pool(2);
  uint64_t bytes_in = 0, bytes_out = 0;
  for (const auto& [name, src, codes, scales] : Quantized(*a, *b, linear, WeightFormat::kInt8)) {
    SCOPED_TRACE(name);
    const int64_t rows = src.dim(0), cols = src.dim(1), kb = scales.dim(1);
    bytes_in += src.nbytes();
    bytes_out += codes.nbytes() + scales.nbytes();
    auto loaded = QuantizeLinearWeightInt8(src, pool);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    const std::vector<float> w = ToF32(src);
    const int8_t* q = codes.ptr<int8_t>();
    const float* s = scales.ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        const float scale = s[r * kb + i / 32];
        const double deq = static_cast<double>(q[r * cols + i]) * scale;
        ASSERT_EQ(Int8WeightAt(*loaded, r, i), deq) << "at [" << r << ", " << i << "]";
        // Half a step, and the F32 rounding of w * (127 / amax) in code units (<= 127 * 2^-24,
        // with inv's and scale's own roundings: about 2.3e-5 of a step).
        ASSERT_LE(std::fabs(w[r * cols + i] - deq), scale * (0.5 + 3e-5));
      }
    }
  }
  EXPECT_EQ(report->weight_bytes_in, bytes_in);
  EXPECT_EQ(report->weight_bytes_out, bytes_out);
  // The tie row of k_proj: scale 1, .5 rounds to even.
  const int8_t* k = b->Get(kK0)->ptr<int8_t>();
  EXPECT_EQ(b->Get(WeightScaleInvName(kK0))->ptr<float>()[0], 1.f);
  EXPECT_EQ(std::vector<int>(k, k + 10), (std::vector<int>{127, 0, 2, 2, 4, 0, -2, -2, 126, -126}));
  // An all-zero row: scale 0, codes 0.
  EXPECT_EQ(b->Get(WeightScaleInvName("lm_head.weight"))->ptr<float>()[511 * 2], 0.f);
  ExpectOthersIdentical(*a, *b, linear);

  const ordered_json q = ExpectConfigExtended(in, out);
  EXPECT_EQ(
      q.dump(),
      R"({"quant_method":"engram_int8","activation_scheme":"dynamic","weight_block_size":[1,32]})");
  auto parsed = ModelConfig::Load(out + "/config.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_TRUE(parsed->quantization.has_value());
  EXPECT_EQ(parsed->quantization->quant_method, "engram_int8");
  EXPECT_EQ(parsed->quantization->weight_dtype(), DType::kI8);
  EXPECT_TRUE(parsed->quantization->modules_to_not_convert.empty());
  EXPECT_EQ(ReadFile(out + "/tokenizer_config.json"), ReadFile(in + "/tokenizer_config.json"));
  EXPECT_FALSE(std::filesystem::exists(out + "/model.safetensors.index.json"));
  EXPECT_FALSE(std::filesystem::exists(out + "/" + std::string(kTableChecksumsFile)));
  auto opened = OpenModel(out);  // what engramd checks when it opens the model
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  ExpectWindowsDoNotMatter(in, out, WeightFormat::kInt8);
}

TEST(WeightQuantize, Fp8CodesAreTheNearestE4M3Values) {
  TempDir dir;
  const std::string in = WriteCustom(dir, {}), out = dir.path() + "/out";
  auto report = QuantizeModelWeights(in, out, Options(WeightFormat::kFp8));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  const std::vector<std::string> linear = LinearNames(CustomConfig(), false);
  EXPECT_EQ(report->weights, 24);
  auto a = TensorStore::OpenDirectory(in);
  auto b = TensorStore::OpenDirectory(out);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
  for (const auto& [name, src, codes, scales] : Quantized(*a, *b, linear, WeightFormat::kFp8)) {
    SCOPED_TRACE(name);
    const int64_t rows = src.dim(0), cols = src.dim(1), rb = scales.dim(0), cb = scales.dim(1);
    const std::vector<float> w = ToF32(src);
    const uint8_t* q = codes.ptr<uint8_t>();
    const float* s = scales.ptr<float>();
    std::vector<float> amax(static_cast<size_t>(rb * cb), 0.f);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        float& m = amax[(r / 128) * cb + i / 128];
        m = std::max(m, std::fabs(w[r * cols + i]));
      }
    }
    for (int64_t blk = 0; blk < rb * cb; ++blk) ASSERT_EQ(s[blk], amax[blk] / 448.f) << blk;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < cols; ++i) {
        const float scale = s[(r / 128) * cb + i / 128];
        const uint8_t want = scale > 0 ? NearestE4M3(w[r * cols + i] / scale) : 0;
        ASSERT_EQ(q[r * cols + i], want) << "at [" << r << ", " << i << "]";
      }
    }
  }
  // The crafted block of q_proj: scale_inv 1, so the codes are the midpoints' even neighbours.
  const uint8_t* q0 = b->Get(kQ0)->ptr<uint8_t>();
  EXPECT_EQ(b->Get(WeightScaleInvName(kQ0))->ptr<float>()[0], 1.f);
  EXPECT_EQ(q0[0], 0x7e);
  for (int code = 0; code < 0x7e; ++code) {
    const int even = code % 2 == 0 ? code : code + 1;
    ASSERT_EQ(q0[1 + 2 * code], even) << code;
    ASSERT_EQ(q0[2 + 2 * code], even | 0x80) << code;
    ASSERT_EQ(q0[300 + code], code);
  }
  // lm_head's last row block is all zeros: scale 0, codes 0.
  EXPECT_EQ(b->Get(WeightScaleInvName("lm_head.weight"))->ptr<float>()[3], 0.f);
  ExpectOthersIdentical(*a, *b, linear);

  const ordered_json qc = ExpectConfigExtended(in, out);
  EXPECT_EQ(
      qc.dump(),
      R"({"quant_method":"fp8","fmt":"e4m3","activation_scheme":"dynamic","weight_block_size":[128,128]})");
  auto parsed = ModelConfig::Load(out + "/config.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_TRUE(parsed->quantization.has_value());
  EXPECT_TRUE(parsed->quantization->fp8());
  EXPECT_EQ(parsed->quantization->block_n, 128);
  EXPECT_EQ(parsed->quantization->block_k, 128);
  auto opened = OpenModel(out);
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
  ExpectWindowsDoNotMatter(in, out, WeightFormat::kFp8);
}

TEST(WeightQuantize, KeepLmHeadLeavesItAndSaysSo) {
  TempDir dir;
  const std::string in = WriteCustom(dir, {}), out = dir.path() + "/out";
  WeightQuantizeOptions o = Options(WeightFormat::kFp8);
  o.keep_lm_head = true;
  auto report = QuantizeModelWeights(in, out, o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->weights, 23);
  auto a = TensorStore::OpenDirectory(in);
  auto b = TensorStore::OpenDirectory(out);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(b->Info("lm_head.weight")->dtype, DType::kF32);
  EXPECT_FALSE(b->Has("lm_head.weight_scale_inv"));
  EXPECT_EQ(b->Info(kDown0)->dtype, DType::kF8E4M3);
  ExpectOthersIdentical(*a, *b, LinearNames(CustomConfig(), true));
  const ordered_json q = ExpectConfigExtended(in, out);
  EXPECT_EQ(
      q.dump(),
      R"({"quant_method":"fp8","fmt":"e4m3","activation_scheme":"dynamic","weight_block_size":[128,128],"modules_to_not_convert":["lm_head"]})");
  auto parsed = ModelConfig::Load(out + "/config.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->quantization->modules_to_not_convert, std::vector<std::string>{"lm_head"});
  auto opened = OpenModel(out);
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
}

TEST(WeightQuantize, TiedEmbeddingsHaveNoLmHeadToQuantize) {
  TempDir dir;
  SynthOptions so;
  so.preset = "tiny-qwen2";  // tied, q/k/v biases
  so.progress = false;
  const std::string in = dir.path() + "/in", out = dir.path() + "/out";
  ASSERT_TRUE(WriteSynthModel(so, in).ok());
  auto report = QuantizeModelWeights(in, out, Options(WeightFormat::kInt8));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->weights, 18);  // 2 layers x 7, two Engram layers' key and value
  auto a = OpenModel(in);
  auto b = OpenModel(out);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
  EXPECT_FALSE(b->store.Has("lm_head.weight"));
  EXPECT_FALSE(b->store.Has("lm_head.weight_scale_inv"));
  EXPECT_EQ(b->store.Info("model.layers.1.mlp.down_proj.weight")->dtype, DType::kI8);
  const std::vector<std::string> linear = LinearNames(a->config, false);
  EXPECT_EQ(linear.size(), 18u);
  ExpectOthersIdentical(a->store, b->store, linear);  // embeddings, biases, norms, tables
  ExpectConfigExtended(in, out);
  // synth's model is sharded (backbone, tables) and has checksums of the tables: both follow.
  const auto index =
      nlohmann::json::parse(ReadFile(out + "/model.safetensors.index.json"))["weight_map"];
  EXPECT_EQ(index["model.layers.0.self_attn.q_proj.weight_scale_inv"], "model.safetensors");
  EXPECT_EQ(index.size(), b->store.Names().size());
  EXPECT_EQ(ReadFile(out + "/" + std::string(kTableChecksumsFile)),
            ReadFile(in + "/" + std::string(kTableChecksumsFile)));
  EXPECT_TRUE(VerifyTableChecksums(*b, {}).ok());
}

TEST(WeightQuantize, ShardedInputKeepsItsShardsAndIndex) {
  TempDir dir;
  Custom c;
  c.shards = 3;
  c.checksums = {EngramTableName(EngramConfig{}, 1), kDown0, "model.norm.weight"};
  const std::string in = WriteCustom(dir, c), out = dir.path() + "/out";
  auto report = QuantizeModelWeights(in, out, Options(WeightFormat::kInt8));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  auto b = TensorStore::OpenDirectory(out);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  const auto in_index =
      nlohmann::json::parse(ReadFile(in + "/model.safetensors.index.json"))["weight_map"];
  const auto index =
      nlohmann::json::parse(ReadFile(out + "/model.safetensors.index.json"))["weight_map"];
  EXPECT_EQ(index.size(), b->Names().size());
  for (const std::string& name : b->Names()) {
    const std::string file = std::filesystem::path(b->Info(name)->file).filename().string();
    EXPECT_EQ(index[name], file) << name;
    if (in_index.contains(name)) {
      EXPECT_EQ(in_index[name], file) << name;
    }
  }
  // Each scale sits in its weight's shard.
  for (const std::string& name : LinearNames(CustomConfig(), false)) {
    EXPECT_EQ(index[WeightScaleInvName(name)], in_index[name]) << name;
  }
  // The checksums: the listed ones, the rewritten down_proj with its new scale, same chunks.
  auto sums = LoadTableChecksums(out + "/" + std::string(kTableChecksumsFile));
  ASSERT_TRUE(sums.ok()) << sums.status().ToString();
  EXPECT_EQ(sums->chunk_bytes, 4096u);
  EXPECT_EQ(sums->tensors.size(), 4u);
  EXPECT_TRUE(sums->tensors.count(WeightScaleInvName(kDown0)));
  EXPECT_TRUE(VerifyTableChecksums(*b, out, {}).ok());
  auto opened = OpenModel(out);
  EXPECT_TRUE(opened.ok()) << opened.status().ToString();
}

TEST(WeightQuantize, WithTablesInOnePass) {
  TempDir dir;
  SynthOptions so;
  so.preset = "tiny-v41";
  so.table_dtype = DType::kBF16;  // BF16 tables and wkv
  so.progress = false;
  const std::string in = dir.path() + "/in", out = dir.path() + "/out";
  ASSERT_TRUE(WriteSynthModel(so, in).ok());
  WeightQuantizeOptions o = Options(WeightFormat::kInt8);
  o.tables_fp8 = true;
  auto report = QuantizeModelWeights(in, out, o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->weights, 22);
  EXPECT_EQ(report->tables, 2);
  auto b = OpenModel(out);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  const EngramConfig& e = *b->config.engram;
  EXPECT_EQ(b->store.Info(EngramTableName(e, 1))->dtype, DType::kF8E4M3);
  EXPECT_EQ(b->store.Info(EngramScaleName(e, 2))->dtype, DType::kF8E8M0);
  EXPECT_EQ(b->store.Info(kQ0)->dtype, DType::kI8);
  EXPECT_EQ(b->config.quantization->quant_method, "engram_int8");
  auto sums = LoadTableChecksums(out + "/" + std::string(kTableChecksumsFile));
  ASSERT_TRUE(sums.ok());
  EXPECT_EQ(sums->tensors.size(), 4u);  // the tables and their scales
  EXPECT_TRUE(VerifyTableChecksums(*b, {}).ok());
}

TEST(WeightQuantize, RefusesWhatItCannotQuantize) {
  TempDir dir;
  const WeightQuantizeOptions o = Options(WeightFormat::kInt8);
  // Already quantized weights, without a quantization_config.
  for (const DType t : {DType::kI8, DType::kF8E4M3}) {
    Custom c;
    c.q0_dtype = t;
    const std::string in = WriteCustom(dir, c, "q" + std::string(DTypeName(t)));
    auto r = QuantizeModelWeights(in, dir.path() + "/x", o);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(in + "/model.safetensors: tensor " + kQ0 + " is " +
                                        std::string(DTypeName(t)) + ": already quantized"),
              std::string::npos)
        << r.status().ToString();
  }
  // A quantized model (its config says so).
  const std::string in = WriteCustom(dir, {});
  const std::string out = dir.path() + "/out";
  ASSERT_TRUE(QuantizeModelWeights(in, out, o).ok());
  auto again = QuantizeModelWeights(out, dir.path() + "/y", Options(WeightFormat::kFp8));
  EXPECT_EQ(again.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(again.status().message().find(out + "/config.json: already has a quantization_config "
                                                "(quant_method \"engram_int8\")"),
            std::string::npos)
      << again.status().ToString();
  // A config with one but float weights is refused the same way.
  ordered_json j = ordered_json::parse(ReadFile(in + "/config.json"));
  j["quantization_config"] = {{"quant_method", "gptq"}};
  const std::string gptq = WriteCustom(dir, {}, "gptq");
  WriteFile(gptq + "/config.json", j.dump());
  auto g = QuantizeModelWeights(gptq, dir.path() + "/z", o);
  EXPECT_NE(g.status().message().find("config.json: already has a quantization_config "
                                      "(quant_method \"gptq\")"),
            std::string::npos)
      << g.status().ToString();
  // A scale already beside a float weight.
  Custom c;
  c.stray_scale = true;
  const std::string stray = WriteCustom(dir, c, "stray");
  auto st = QuantizeModelWeights(stray, dir.path() + "/s", o);
  EXPECT_EQ(st.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.status().message().find(std::string("tensor ") + kQ0 +
                                       "_scale_inv is already present beside " + kQ0),
            std::string::npos)
      << st.status().ToString();
  // A NaN weight.
  c = Custom{};
  c.nan = true;
  const std::string nan = WriteCustom(dir, c, "nan");
  auto n = QuantizeModelWeights(nan, dir.path() + "/n", o);
  EXPECT_EQ(n.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(n.status().message().find(
                "tensor model.layers.1.mlp.up_proj.weight holds nan at [1, 6]: only finite"),
            std::string::npos)
      << n.status().ToString();
  // The model itself as output; an unknown format.
  EXPECT_EQ(QuantizeModelWeights(in, in, o).status().code(), StatusCode::kFailedPrecondition);
  auto f = ParseWeightFormat("int4");
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(f.status().message().find("unknown weight format \"int4\" (expected int8"),
            std::string::npos)
      << f.status().ToString();
  EXPECT_EQ(*ParseWeightFormat("fp8"), WeightFormat::kFp8);
}

}  // namespace
}  // namespace engram
