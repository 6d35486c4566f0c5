#include "model/synth.h"

#include <unistd.h>
#include "common/file_read.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <new>
#include <sstream>
#include <system_error>
#include <thread>
#include <type_traits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/fp8.h"
#include "common/parallel.h"
#include "common/row_format.h"
#include "model/engram_geometry.h"
#include "model/table_checksum.h"
#include "model/weights.h"
#include "text/compression_builder.h"
#include "text/tokenizer.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kChunkElems = uint64_t{1} << 16;    // unit of parallel work
constexpr uint64_t kWindowBytes = uint64_t{32} << 20;  // per streamed write buffer
constexpr const char* kBackboneFile = "model.safetensors";
constexpr const char* kTableFile = "model-engram-tables.safetensors";

uint64_t Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

// One tensor to generate: element i = mean + half_range * (2u - 1), u uniform in [0, 1)
// drawn from the counter-based stream of `key`.
// FP8 tensors (dtype F8_E4M3) are drawn the same way, times a magnitude per quantization block
// in [0.5, 2) (so block scales vary as in trained tables), then quantized: tables per 32 values
// of a row (kRows), wkv per 32x32 tile (kTiles, whose scales are computed once in Plan). A scale
// tensor (F8_E8M0) is derived from its base tensor's values.
enum class Fp8Blocks : uint8_t { kNone, kRows, kTiles };

struct PlannedTensor {
  ExpectedTensor spec;
  DType dtype = DType::kBF16;
  uint64_t key = 0;
  uint64_t numel = 0;
  float mean = 0.f;
  float half_range = 0.f;               // std * sqrt(3)
  Fp8Blocks blocks = Fp8Blocks::kNone;  // of an F8_E4M3 tensor, or of a scale tensor's base
  std::vector<uint8_t> tile_scales;     // kTiles: [ceil(rows/32), ceil(cols/32)]
  const PlannedTensor* base = nullptr;  // a scale tensor's F8_E4M3 tensor
};

// Element i takes 32 bits of draw i / 2 (low half for even i, high half for odd i), where
// draw j = Mix(key + (j + 1) * golden): a pure function of (key, i).
template <typename T>
void FillTyped(const PlannedTensor& t, uint64_t first, uint64_t count, T* out) {
  const float scale = 2.0f * t.half_range / 16777216.0f;
  const float offset = t.mean - t.half_range;
  auto value = [&](uint32_t bits) {
    const float v = offset + scale * static_cast<float>(bits >> 8);
    if constexpr (std::is_same_v<T, float>) {
      return v;
    } else {
      return F32ToBf16(v);
    }
  };
  auto draw = [&](uint64_t j) { return Mix(t.key + (j + 1) * kGolden); };
  uint64_t i = first;
  const uint64_t end = first + count;
  if (i < end && (i & 1)) {
    *out++ = value(static_cast<uint32_t>(draw(i >> 1) >> 32));
    ++i;
  }
  for (; i + 1 < end; i += 2) {
    const uint64_t r = draw(i >> 1);
    out[0] = value(static_cast<uint32_t>(r));
    out[1] = value(static_cast<uint32_t>(r >> 32));
    out += 2;
  }
  if (i < end) *out = value(static_cast<uint32_t>(draw(i >> 1)));
}

// The magnitude of quantization block `block` of an FP8 tensor, in [0.5, 2).
float BlockMagnitude(const PlannedTensor& t, uint64_t block) {
  const uint64_t r = Mix(t.key ^ Mix(block + 0xB10Cull));
  return std::exp2(static_cast<float>(r >> 40) / 16777216.0f * 2.0f - 1.0f);
}

uint64_t BlockOf(const PlannedTensor& t, uint64_t i) {
  if (t.blocks == Fp8Blocks::kRows) return i / kFp8Block;
  const uint64_t cols = static_cast<uint64_t>(t.spec.shape[1]);
  const uint64_t tc = (cols + kFp8Block - 1) / kFp8Block;
  return (i / cols / kFp8Block) * tc + (i % cols) / kFp8Block;
}

// Values [first, first + count) of an FP8 tensor before quantization.
void Fp8Values(const PlannedTensor& t, uint64_t first, uint64_t count, float* out) {
  FillTyped(t, first, count, out);
  for (uint64_t k = 0; k < count; ++k) out[k] *= BlockMagnitude(t, BlockOf(t, first + k));
}

// Writes elements [first, first + count) of `t` in t.dtype to out. For kRows FP8 tensors and
// their scales, first and count are whole blocks (Plan and the writers keep them aligned).
void Fill(const PlannedTensor& t, uint64_t first, uint64_t count, void* out) {
  switch (t.dtype) {
    case DType::kF32:
      FillTyped(t, first, count, static_cast<float*>(out));
      return;
    case DType::kF8E4M3: {
      std::vector<float> v(count);
      Fp8Values(t, first, count, v.data());
      auto* codes = static_cast<uint8_t*>(out);
      if (t.blocks == Fp8Blocks::kRows) {
        std::vector<uint8_t> scales(count / kFp8Block);
        QuantizeFp8Row(v.data(), static_cast<int64_t>(count), codes, scales.data());
        return;
      }
      for (uint64_t k = 0; k < count; ++k) {
        const int shift = 127 - static_cast<int>(t.tile_scales[BlockOf(t, first + k)]);
        codes[k] = F32ToE4M3(std::ldexp(v[k], shift));
      }
      return;
    }
    case DType::kF8E8M0: {
      auto* scales = static_cast<uint8_t*>(out);
      const PlannedTensor& b = *t.base;
      if (b.blocks == Fp8Blocks::kTiles) {
        std::memcpy(scales, b.tile_scales.data() + first, count);
        return;
      }
      float v[kFp8Block];
      for (uint64_t k = 0; k < count; ++k) {
        Fp8Values(b, (first + k) * kFp8Block, kFp8Block, v);
        Fp8RowScales(v, kFp8Block, &scales[k]);  // exactly the scale QuantizeFp8Row chose
      }
      return;
    }
    default:
      FillTyped(t, first, count, static_cast<uint16_t*>(out));
      return;
  }
}

struct FillJob {
  const PlannedTensor* tensor;
  uint64_t first;
  uint64_t count;
  void* out;
};

// Runs the jobs on `threads` threads (the caller's thread included).
void RunJobs(const std::vector<FillJob>& jobs, int threads) {
  (void)ParallelFor(jobs.size(), threads, [&](size_t j) {
    Fill(*jobs[j].tensor, jobs[j].first, jobs[j].count, jobs[j].out);
    return Status::Ok();
  });
}

// Splits elements [first, first + count) of t (destination out) into chunk jobs (kChunkElems is
// a multiple of the FP8 block).
void AddJobs(std::vector<FillJob>& jobs, const PlannedTensor& t, uint64_t first, uint64_t count,
             char* out) {
  const size_t esize = DTypeSize(t.dtype);
  for (uint64_t done = 0; done < count; done += kChunkElems) {
    const uint64_t n = std::min(kChunkElems, count - done);
    jobs.push_back(FillJob{&t, first + done, n, out + done * esize});
  }
}

std::pair<float, float> Distribution(const ExpectedTensor& e, const ModelConfig& c) {
  const double L = static_cast<double>(c.num_hidden_layers);
  double mean = 0, stdev = 1;
  switch (e.role) {
    case TensorRole::kEmbedding:
      stdev = c.tie_word_embeddings ? 1.0 / std::sqrt(static_cast<double>(c.hidden_size)) : 1.0;
      break;
    case TensorRole::kNorm:
      mean = 1.0;
      stdev = 0.1;
      break;
    case TensorRole::kLinear:
      stdev = 1.0 / std::sqrt(static_cast<double>(e.shape[1]));
      break;
    case TensorRole::kOutputLinear:
      stdev = 1.0 / std::sqrt(static_cast<double>(e.shape[1]) * 2.0 * L);
      break;
    case TensorRole::kBias:
      stdev = 0.02;
      break;
    case TensorRole::kLmHead:
      stdev = 1.0 / std::sqrt(static_cast<double>(c.hidden_size));
      break;
    case TensorRole::kEngramTable:
      stdev = 1.0;
      break;
    case TensorRole::kEngramProj:
      stdev = 1.0 / std::sqrt(static_cast<double>(e.shape[1]));
      break;
    case TensorRole::kEngramConv:
      stdev = 1.0 / std::sqrt(static_cast<double>(e.shape[2]));
      break;
    case TensorRole::kEngramWkv:
      stdev = 1.0 / std::sqrt(static_cast<double>(e.shape[1]));
      break;
    case TensorRole::kEngramGateW:
      mean = 1.0;
      stdev = 0.1;
      break;
    case TensorRole::kEngramScale:  // derived from the base tensor
    case TensorRole::kLinearScale:  // never planned: synth writes float Linear weights
      break;
  }
  return {static_cast<float>(mean), static_cast<float>(stdev * std::sqrt(3.0))};
}

// The dtype each tensor is written in: Engram tables and V4.1's wkv may be FP8, everything
// else is the backbone's dtype.
struct PlanDTypes {
  DType backbone = DType::kBF16;
  DType tables = DType::kBF16;
  DType wkv = DType::kBF16;
};

Result<std::vector<PlannedTensor>> Plan(const ModelConfig& c, uint64_t seed,
                                        const PlanDTypes& dtypes) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<ExpectedTensor> expected, ExpectedTensors(c));
  std::vector<PlannedTensor> plan;
  plan.reserve(expected.size());
  std::map<std::string, size_t> index;
  for (ExpectedTensor& e : expected) {
    if (e.role == TensorRole::kLinearScale) continue;  // quantized weights: pack quantize
    PlannedTensor p;
    p.dtype = e.role == TensorRole::kEngramTable ? dtypes.tables
              : e.role == TensorRole::kEngramWkv ? dtypes.wkv
                                                 : dtypes.backbone;
    if (e.role == TensorRole::kEngramScale) {
      auto it = index.find(e.scale_of);
      if (it == index.end()) return Internal("synth: {} scales unknown {}", e.name, e.scale_of);
      if (plan[it->second].dtype != DType::kF8E4M3) continue;  // only FP8 tensors have scales
      p.dtype = DType::kF8E8M0;
    }
    p.key = Mix(Mix(seed ^ 0x5EEDull) ^ Fnv1a(e.name));
    p.numel = 1;
    for (int64_t d : e.shape) p.numel *= static_cast<uint64_t>(d);
    std::tie(p.mean, p.half_range) = Distribution(e, c);
    if (p.dtype == DType::kF8E4M3) {
      p.blocks = e.role == TensorRole::kEngramTable ? Fp8Blocks::kRows : Fp8Blocks::kTiles;
    }
    p.spec = std::move(e);
    index[p.spec.name] = plan.size();
    plan.push_back(std::move(p));
  }
  // Tile scales (wkv: small), then the scale tensors' bases (pointers are stable now).
  for (PlannedTensor& p : plan) {
    if (p.blocks != Fp8Blocks::kTiles) continue;
    const int64_t rows = p.spec.shape[0], cols = p.spec.shape[1];
    std::vector<float> w(static_cast<size_t>(rows * cols));
    Fp8Values(p, 0, p.numel, w.data());
    std::vector<uint8_t> codes(w.size());
    p.tile_scales.resize(static_cast<size_t>(((rows + kFp8Block - 1) / kFp8Block) *
                                             ((cols + kFp8Block - 1) / kFp8Block)));
    QuantizeFp8Tiles(w.data(), rows, cols, codes.data(), p.tile_scales.data());
  }
  for (PlannedTensor& p : plan) {
    if (p.dtype != DType::kF8E8M0) continue;
    p.base = &plan[index.at(p.spec.scale_of)];
    p.blocks = p.base->blocks;
  }
  return plan;
}

// V4.1 presets store FP8 tables by default; FP8 tables come with an FP8 wkv (V4.1's layout).
PlanDTypes DTypesOf(const SynthOptions& o, const ModelConfig& c) {
  PlanDTypes d;
  d.backbone = o.dtype;
  const bool v41 = c.engram && c.engram->v41();
  d.tables = o.table_dtype.value_or(v41 ? DType::kF8E4M3 : o.dtype);
  d.wkv = d.tables == DType::kF8E4M3 ? DType::kF8E4M3 : o.dtype;
  return d;
}

int ThreadCount(const SynthOptions& o) {
  if (o.threads > 0) return o.threads;
  return std::max(1u, std::thread::hardware_concurrency());
}

// ---- presets

ModelConfig TinyConfig() {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 160;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 2048;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = false;
  c.attention_bias = false;
  c.bos_token_id = 0;
  c.eos_token_ids = {1};
  EngramConfig e;
  e.engram_vocab_size = {1000, 1000};
  e.max_ngram_size = 3;
  e.n_embed_per_ngram = 32;
  e.n_head_per_ngram = 4;
  e.layer_ids = {1};
  e.pad_id = 2;
  e.seed = 0;
  e.kernel_size = 4;
  c.engram = e;
  return c;
}

ModelConfig TinyQwen2Config() {
  ModelConfig c = TinyConfig();
  c.model_type = "qwen2";
  c.attention_bias = true;
  c.tie_word_embeddings = true;
  c.num_hidden_layers = 2;
  RopeScaling rs;
  rs.rope_type = "llama3";
  rs.factor = 8;
  rs.low_freq_factor = 1;
  rs.high_freq_factor = 4;
  rs.original_max_position_embeddings = 64;
  c.rope_scaling = rs;
  c.engram->layer_ids = {0, 1};
  c.engram->max_ngram_size = 4;
  c.engram->engram_vocab_size = {700, 800, 900};
  return c;
}

ModelConfig LargeBase(int64_t vocab, int64_t hidden, int64_t inter, int64_t layers, int64_t heads,
                      int64_t kv_heads, int64_t head_dim) {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = inter;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  c.rope_theta = 500000.0;
  c.rms_norm_eps = 1e-5;
  EngramConfig e;
  e.max_ngram_size = 3;
  e.n_embed_per_ngram = 512;
  e.n_head_per_ngram = 8;
  e.pad_id = 2;
  e.seed = 0;
  e.kernel_size = 4;
  c.engram = e;
  return c;
}

ModelConfig SmallConfig() {
  ModelConfig c = LargeBase(32000, 1024, 2816, 8, 16, 4, 64);
  c.max_position_embeddings = 4096;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.engram->layer_ids = {1, 5};
  c.engram->engram_vocab_size = {540000, 540000};
  return c;
}

ModelConfig Llama3Like(int64_t hidden, int64_t inter, int64_t layers, int64_t heads,
                       double rope_factor) {
  ModelConfig c = LargeBase(128256, hidden, inter, layers, heads, 8, 128);
  c.max_position_embeddings = 131072;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001, 128009};
  RopeScaling rs;
  rs.rope_type = "llama3";
  rs.factor = rope_factor;
  rs.low_freq_factor = 1;
  rs.high_freq_factor = 4;
  rs.original_max_position_embeddings = 8192;
  c.rope_scaling = rs;
  c.engram->layer_ids = {1, 15};
  return c;
}

// DeepSeek-V4.1's Engram module on a backbone of ours: flat-key config, seed 0, no short conv,
// the gate's eps 1e-20; compressed vocabulary = the vocabulary (identity compression, until a
// tokenizer sets it).
void MakeV41(ModelConfig& c, std::vector<int> layers, int n, int heads, int head_dim,
             int64_t vocab) {
  EngramConfig e;
  e.variant = EngramVariant::kV41;
  e.layer_ids = std::move(layers);
  e.max_ngram_size = n;
  e.engram_vocab_size.assign(static_cast<size_t>(n - 1), vocab);
  e.n_head_per_ngram = heads;
  e.n_embed_per_ngram = heads * head_dim;
  e.pad_id = 2;
  e.seed = 0;
  e.short_conv = false;
  e.norm_eps = 1e-20;
  e.compressed_vocab_size = c.vocab_size;
  e.hc_mult = 1;
  c.engram = e;
}

struct Preset {
  const char* name;
  std::function<ModelConfig()> make;
  double default_table_gb;  // 0: keep the preset's engram_vocab_size
};

const std::vector<Preset>& Presets() {
  static const std::vector<Preset> presets = {
      {"tiny", TinyConfig, 0},
      {"tiny-qwen2", TinyQwen2Config, 0},
      {"small", SmallConfig, 0},
      {"dense-4b",
       [] {
         ModelConfig c = Llama3Like(3072, 8192, 28, 24, 32);
         c.tie_word_embeddings = true;
         return c;
       },
       4.0},
      {"dense-8b", [] { return Llama3Like(4096, 14336, 32, 32, 8); }, 8.0},
      {"tiny-v41",
       [] {
         ModelConfig c = TinyConfig();
         MakeV41(c, {1, 2}, 3, 2, 32, 1000);
         return c;
       },
       0},
      {"small-v41",
       [] {
         ModelConfig c = SmallConfig();
         MakeV41(c, {1, 5}, 4, 8, 256, 160000);  // 2 x 24 x ~160k rows of 264 B: 2.03 GB
         return c;
       },
       0},
      {"dense-8b-v41",
       [] {
         ModelConfig c = Llama3Like(4096, 14336, 32, 32, 8);
         MakeV41(c, {1, 15}, 4, 8, 256, 1000000);
         return c;
       },
       40.0},
  };
  return presets;
}

// Vocabulary size and special tokens of a Hugging Face tokenizer.json.
struct TokenizerFacts {
  int64_t vocab_size = 0;
  int64_t bos = -1;
  std::vector<int64_t> eos;
};

Result<TokenizerFacts> ReadTokenizer(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(json j, ReadJsonFile(path, kMaxTokenizerFileBytes, "tokenizer"));
  if (!j.is_object()) return InvalidArgument("{}: not a JSON object", path);
  int64_t max_id = -1;
  auto model = j.find("model");
  if (model != j.end() && model->is_object()) {
    auto vocab = model->find("vocab");
    if (vocab != model->end() && vocab->is_object()) {  // BPE / WordPiece: {piece: id}
      for (const auto& [piece, id] : vocab->items()) {
        if (id.is_number_integer()) max_id = std::max(max_id, id.get<int64_t>());
      }
    } else if (vocab != model->end() && vocab->is_array()) {  // Unigram: [[piece, score]]
      max_id = static_cast<int64_t>(vocab->size()) - 1;
    }
  }
  TokenizerFacts facts;
  static const char* kBos[] = {"<|begin_of_text|>", "<s>",
                               "<\xEF\xBD\x9C"
                               "begin\xE2\x96\x81of"
                               "\xE2\x96\x81sentence\xEF\xBD\x9C>"};
  static const char* kEos[] = {"<|end_of_text|>",
                               "<|eot_id|>",
                               "</s>",
                               "<|endoftext|>",
                               "<|im_end|>",
                               "<\xEF\xBD\x9C"
                               "end\xE2\x96\x81of"
                               "\xE2\x96\x81sentence\xEF\xBD\x9C>"};
  auto added = j.find("added_tokens");
  if (added != j.end() && added->is_array()) {
    for (const json& t : *added) {
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer()) continue;
      const int64_t id = t["id"].get<int64_t>();
      max_id = std::max(max_id, id);
      const std::string content = t.value("content", std::string());
      for (const char* b : kBos) {
        if (content == b && facts.bos < 0) facts.bos = id;
      }
      for (const char* e : kEos) {
        if (content == e) facts.eos.push_back(id);
      }
    }
  }
  if (max_id < 0) return InvalidArgument("{}: no vocabulary (model.vocab, added_tokens)", path);
  facts.vocab_size = max_id + 1;
  return facts;
}

// Streams report bytes and rate on stderr at most once a second, and a summary at the end.
class Progress {
 public:
  Progress(bool enabled, uint64_t total) : enabled_(enabled), total_(total) {}
  void Add(uint64_t bytes) {
    done_ += bytes;
    if (!enabled_) return;
    const auto now = Clock::now();
    if (now - last_ < std::chrono::seconds(1) && done_ < total_) return;
    last_ = now;
    const double s = Seconds();
    std::fprintf(stderr, "%ssynth: %.2f / %.2f GB written, %.2f GB/s%s", tty_ ? "\r" : "",
                 done_ / 1e9, total_ / 1e9, s > 0 ? done_ / 1e9 / s : 0.0, tty_ ? "" : "\n");
    std::fflush(stderr);
  }
  void Done(const std::string& where) {
    if (!enabled_) return;
    const double s = Seconds();
    std::fprintf(stderr, "%ssynth: wrote %.2f GB to %s in %.2f s (%.2f GB/s)\n", tty_ ? "\n" : "",
                 done_ / 1e9, where.c_str(), s, s > 0 ? done_ / 1e9 / s : 0.0);
  }

 private:
  using Clock = std::chrono::steady_clock;
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  bool enabled_;
  bool tty_ = isatty(2) != 0;
  uint64_t total_;
  uint64_t done_ = 0;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = Clock::now();
};

// Writes `tensors` to one safetensors file, generating window after window on `threads`
// threads while the previous window is being written.
Status WriteShard(const std::string& path, const std::vector<const PlannedTensor*>& tensors,
                  int threads, const std::map<std::string, std::string>& metadata,
                  Progress& progress) {
  std::vector<SafetensorsWriter::Spec> specs;
  for (const PlannedTensor* t : tensors) specs.push_back({t->spec.name, t->dtype, t->spec.shape});
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer,
                          SafetensorsWriter::Create(path, specs, metadata));
  std::vector<char> buffers[2];
  buffers[0].resize(kWindowBytes);
  buffers[1].resize(kWindowBytes);
  Status io_status;
  std::thread io;
  struct Joiner {  // joins the write thread on every exit path
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } joiner{io};
  size_t t = 0;      // current tensor
  uint64_t off = 0;  // next element of tensors[t]
  int b = 0;
  while (t < tensors.size()) {
    std::vector<FillJob> jobs;
    uint64_t filled = 0;  // bytes
    char* base = buffers[b].data();
    while (t < tensors.size() && filled < kWindowBytes) {
      const PlannedTensor& pt = *tensors[t];
      const size_t esize = DTypeSize(pt.dtype);
      uint64_t n = std::min(pt.numel - off, (kWindowBytes - filled) / esize);
      // FP8 tables are quantized per 32 values: a window ends on a block boundary.
      if (pt.blocks == Fp8Blocks::kRows && pt.dtype == DType::kF8E4M3 && off + n < pt.numel) {
        n -= n % kFp8Block;
      }
      if (n == 0 && pt.numel > 0) break;  // the window is full
      AddJobs(jobs, pt, off, n, base + filled);
      filled += n * esize;
      off += n;
      if (off == pt.numel) {
        ++t;
        off = 0;
      }
    }
    RunJobs(jobs, threads);
    if (io.joinable()) io.join();
    ENGRAM_RETURN_IF_ERROR(io_status);
    const uint64_t bytes = filled;
    io = std::thread([&, base, bytes] {
      io_status = writer->Append(base, bytes);
      progress.Add(bytes);
    });
    b ^= 1;
  }
  if (io.joinable()) io.join();
  ENGRAM_RETURN_IF_ERROR(io_status);
  return writer->Finish();
}

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Unavailable("{}: cannot write", path);
  return Status::Ok();
}

}  // namespace

std::vector<std::string> SynthPresetNames() {
  std::vector<std::string> names;
  for (const Preset& p : Presets()) names.emplace_back(p.name);
  return names;
}

Result<DType> ParseSynthDType(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (lower == "bf16" || lower == "bfloat16") return DType::kBF16;
  if (lower == "f32" || lower == "float32") return DType::kF32;
  return InvalidArgument("unknown dtype \"{}\" (expected bf16 or f32)", name);
}

Result<DType> ParseSynthTableDType(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (lower == "fp8" || lower == "f8_e4m3") return DType::kF8E4M3;
  auto dt = ParseSynthDType(name);
  if (!dt.ok()) return InvalidArgument("unknown dtype \"{}\" (expected bf16, f32 or fp8)", name);
  return dt;
}

Result<ModelConfig> SynthConfig(const SynthOptions& o) {
  const Preset* preset = nullptr;
  for (const Preset& p : Presets()) {
    if (o.preset == p.name) preset = &p;
  }
  if (preset == nullptr) {
    return InvalidArgument("unknown synth preset \"{}\" (expected one of: {})", o.preset,
                           fmt::join(SynthPresetNames(), ", "));
  }
  if (o.dtype != DType::kBF16 && o.dtype != DType::kF32) {
    return InvalidArgument("synth dtype {} is not supported (expected BF16 or F32)",
                           DTypeName(o.dtype));
  }
  ModelConfig c = preset->make();
  if (!o.tokenizer_path.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(TokenizerFacts tok, ReadTokenizer(o.tokenizer_path));
    c.vocab_size = tok.vocab_size;
    if (tok.bos >= 0) c.bos_token_id = tok.bos;
    if (!tok.eos.empty()) c.eos_token_ids = tok.eos;
    if (c.bos_token_id >= c.vocab_size) c.bos_token_id = -1;
    std::erase_if(c.eos_token_ids, [&](int64_t id) { return id >= c.vocab_size; });
    if (c.engram && c.engram->v41()) {  // the multipliers derive from the compressed vocabulary
      ENGRAM_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Load(o.tokenizer_path));
      ENGRAM_ASSIGN_OR_RETURN(CompressionMap map, BuildCompressionMap(tokenizer));
      c.engram->compressed_vocab_size = map.num_compressed();
    }
  } else if (c.engram && c.engram->v41()) {
    c.engram->compressed_vocab_size = c.vocab_size;
  }
  if (o.table_dtype && *o.table_dtype != DType::kBF16 && *o.table_dtype != DType::kF32 &&
      *o.table_dtype != DType::kF8E4M3) {
    return InvalidArgument("synth table dtype {} is not supported (expected BF16, F32 or F8_E4M3)",
                           DTypeName(*o.table_dtype));
  }
  if (c.engram && DTypesOf(o, c).tables == DType::kF8E4M3 &&
      c.engram->head_dim() % kFp8Block != 0) {
    return InvalidArgument(
        "synth:{}: FP8 tables need rows of a multiple of {} values (one E8M0 scale each {}); "
        "this preset's Engram rows have {}",
        o.preset, kFp8Block, kFp8Block, c.engram->head_dim());
  }
  const double table_gb = o.table_gb.value_or(preset->default_table_gb);
  if (o.table_gb && !(*o.table_gb > 0)) {
    return InvalidArgument("table_gb = {} must be positive", *o.table_gb);
  }
  if (table_gb > 0) {
    EngramConfig& e = *c.engram;
    const RowFormat row{DTypesOf(o, c).tables, e.head_dim()};
    const double per_row =
        static_cast<double>(e.layer_ids.size()) * e.num_heads() * static_cast<double>(row.bytes());
    const int64_t rows = std::max<int64_t>(2, std::llround(table_gb * 1e9 / per_row));
    e.engram_vocab_size.assign(static_cast<size_t>(e.max_ngram_size - 1), rows);
  }
  ENGRAM_RETURN_IF_ERROR(c.Validate("synth:" + o.preset));
  return c;
}

Status WriteSynthModel(const SynthOptions& o, const std::string& out_dir) {
  ENGRAM_ASSIGN_OR_RETURN(ModelConfig config, SynthConfig(o));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<PlannedTensor> plan,
                          Plan(config, o.seed, DTypesOf(o, config)));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return Unavailable("{}: cannot create the directory: {}", out_dir, ec.message());

  std::vector<const PlannedTensor*> backbone, tables;
  uint64_t total = 0;
  for (const PlannedTensor& p : plan) {
    const bool table = p.spec.role == TensorRole::kEngramTable ||
                       (p.base != nullptr && p.base->spec.role == TensorRole::kEngramTable);
    (table ? tables : backbone).push_back(&p);
    total += p.numel * DTypeSize(p.dtype);
  }
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"engram_synth_preset", o.preset},
      {"engram_synth_seed", std::to_string(o.seed)}};
  Progress progress(o.progress, total);
  const int threads = ThreadCount(o);
  const fs::path dir(out_dir);
  json weight_map = json::object();
  try {
    ENGRAM_RETURN_IF_ERROR(
        WriteShard((dir / kBackboneFile).string(), backbone, threads, metadata, progress));
    for (const PlannedTensor* p : backbone) weight_map[p->spec.name] = kBackboneFile;
    if (!tables.empty()) {
      ENGRAM_RETURN_IF_ERROR(
          WriteShard((dir / kTableFile).string(), tables, threads, metadata, progress));
      for (const PlannedTensor* p : tables) weight_map[p->spec.name] = kTableFile;
    }
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("{}: out of memory while writing the synthetic model", out_dir);
  } catch (const std::system_error& e) {
    return Internal("{}: cannot start a thread: {}", out_dir, e.what());
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  ENGRAM_RETURN_IF_ERROR(
      WriteText((dir / "model.safetensors.index.json").string(), index.dump(2) + "\n"));
  json cj = config.ToJson();
  cj["torch_dtype"] = o.dtype == DType::kF32 ? "float32" : "bfloat16";
  ENGRAM_RETURN_IF_ERROR(WriteText((dir / "config.json").string(), cj.dump(2) + "\n"));
  if (!o.tokenizer_path.empty()) {
    fs::copy_file(o.tokenizer_path, dir / "tokenizer.json", fs::copy_options::overwrite_existing,
                  ec);
    if (ec) {
      return Unavailable("{}: cannot copy to {}: {}", o.tokenizer_path,
                         (dir / "tokenizer.json").string(), ec.message());
    }
    // Its chat template and special tokens travel with it.
    const fs::path tcfg = fs::path(o.tokenizer_path).parent_path() / "tokenizer_config.json";
    if (fs::exists(tcfg, ec)) {
      fs::copy_file(tcfg, dir / "tokenizer_config.json", fs::copy_options::overwrite_existing, ec);
      if (ec) {
        return Unavailable("{}: cannot copy to {}: {}", tcfg.string(),
                           (dir / "tokenizer_config.json").string(), ec.message());
      }
    }
  }
  progress.Done(out_dir);
  // engram_checksums.json for the Engram tables (read back, mostly from the page cache).
  if (!tables.empty()) {
    ENGRAM_RETURN_IF_ERROR(WriteTableChecksums(out_dir, o.threads));
  }
  return Status::Ok();
}

Result<SynthModel> SynthesizeInMemory(const SynthOptions& o) {
  ENGRAM_ASSIGN_OR_RETURN(ModelConfig config, SynthConfig(o));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<PlannedTensor> plan,
                          Plan(config, o.seed, DTypesOf(o, config)));
  SynthModel m;
  m.config = std::move(config);
  m.tokenizer_path = o.tokenizer_path;
  try {
    std::vector<Tensor> tensors;
    std::vector<FillJob> jobs;
    tensors.reserve(plan.size());
    for (const PlannedTensor& p : plan) {
      tensors.push_back(HostTensor(p.dtype, p.spec.shape));
      AddJobs(jobs, p, 0, p.numel, static_cast<char*>(tensors.back().data));
    }
    RunJobs(jobs, ThreadCount(o));
    for (size_t i = 0; i < plan.size(); ++i) {
      m.store.AddInMemory(plan[i].spec.name, std::move(tensors[i]));
    }
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("synth:{}: out of memory for the in-memory model", o.preset);
  } catch (const std::system_error& e) {
    return Internal("synth:{}: cannot start a thread: {}", o.preset, e.what());
  }
  return m;
}

}  // namespace engram
