// Synthetic (random-weight) Engram models: fixed presets of config.json plus deterministic
// weights, written to a model directory or held in memory. Used by tests and benchmarks.
//
// Presets (exact values; tests rely on them):
//   tiny        llama, vocab 512, hidden 64, intermediate 160, 3 layers, 4 heads / 2 kv heads,
//               head_dim 16, untied; engram layers [1], N = 3, vocab [1000, 1000], 32 = 4 x 8.
//   tiny-qwen2  tiny with q/k/v biases, tied embeddings, 2 layers, llama3 rope scaling
//               (factor 8, original 64); engram layers [0, 1], N = 4, vocab [700, 800, 900].
//   small       vocab 32000, hidden 1024, 8 layers, 16/4 heads; engram layers [1, 5],
//               vocab [540000, 540000], 512 = 8 x 64 (tables ~2.2 GB in bf16).
//   dense-4b    Llama-3.2-3B-like shapes, tied; engram layers [1, 15]; tables 4 GB by default.
//   dense-8b    Llama-3-8B shapes; engram layers [1, 15]; tables 8 GB by default.
//   tiny-v41    tiny's backbone with DeepSeek-V4.1's Engram module (flat engram_* keys):
//               layers [1, 2], N = 3, vocab 1000, 2 heads of head_dim 32, FP8 tables and wkv.
//   small-v41   small's backbone, V4.1 module as released: layers [1, 5], N = 4, 8 heads of
//               256, vocab 160000: 2 x 24 x ~160k rows of 264 bytes (2.03 GB of FP8 tables).
//   dense-8b-v41  dense-8b's backbone, V4.1 module (layers [1, 15], N = 4, 8 x 256); 40 GB of
//               FP8 tables by default.
// V4.1 presets have no short conv; their compressed vocabulary is the vocabulary, or the
// tokenizer's compression map with one.
//
// Weights. Every element is a pure function of (seed, tensor name, element index): a
// counter-based hash (splitmix64 finalizer) of the tensor's key and the element's index, so
// values do not depend on thread count, chunking, or whether they go to a file or memory.
// Distributions are uniform with the std below (mean 0 unless noted), chosen so activations
// stay O(1) through every layer and logits are not saturated:
//   linear weights (q/k/v/gate/up)     std 1/sqrt(fan_in)       -> outputs ~unit variance
//   output projections (o/down)        std 1/sqrt(fan_in * 2L)  -> residual grows ~sqrt(2)
//   norm weights (all RMSNorms)        1 + std 0.1 noise        (catches ignored weights)
//   embeddings                         std 1 (untied); 1/sqrt(hidden) when tied, so the tied
//                                      lm_head gives logits of std ~1
//   lm_head (untied)                   std 1/sqrt(hidden)       -> logits std ~1
//   biases                             std 0.02
//   Engram table rows                  std 1
//   Engram key/value projections       std 1/sqrt(engram_dim)
//   Engram conv weights [H, 1, K]      std 1/sqrt(K)
//   V4.1 wkv                           std 1/sqrt(engram_dim); q_weight, k_weight as norms
// FP8 tensors (tables per 32 values of a row, wkv per 32x32 tile) are drawn the same way times a
// magnitude per block in [0.5, 2), then quantized with a scale chosen from each block's largest
// value (fp8.h), so scales vary from block to block as in trained tables.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace engram {

struct SynthOptions {
  std::string preset = "tiny";
  uint64_t seed = 0;
  DType dtype = DType::kBF16;  // kBF16 or kF32: the backbone
  // The Engram tables: kBF16, kF32 or kF8E4M3 (with E8M0 scales, and then V4.1's wkv in FP8
  // too); default F8_E4M3 for the -v41 presets, else `dtype`.
  std::optional<DType> table_dtype;
  // Total bytes (1e9 units) of the Engram tables of all layers together: overrides the
  // preset's engram_vocab_size (every order gets the same size).
  std::optional<double> table_gb;
  // A Hugging Face tokenizer.json: copied into the model directory; vocab_size becomes its
  // vocabulary size (max id of model.vocab and added_tokens, + 1) and bos/eos follow its
  // special tokens where recognized.
  std::string tokenizer_path;
  bool progress = true;  // WriteSynthModel reports bytes written and GB/s on stderr
  int threads = 0;       // 0: std::thread::hardware_concurrency()
};

struct SynthModel {
  ModelConfig config;
  TensorStore store;           // in-memory tensors
  std::string tokenizer_path;  // SynthOptions::tokenizer_path
};

// Preset names, in the order above.
std::vector<std::string> SynthPresetNames();
// "bf16" | "f32" (case-insensitive) -> DType; error lists the accepted values.
Result<DType> ParseSynthDType(std::string_view name);
// "bf16" | "f32" | "fp8" (case-insensitive) -> DType (fp8: F8_E4M3 rows with E8M0 scales).
Result<DType> ParseSynthTableDType(std::string_view name);
// The config of a preset with the options applied (table_gb, tokenizer); validated.
// INVALID_ARGUMENT for an unknown preset (lists the presets) or a bad option.
Result<ModelConfig> SynthConfig(const SynthOptions& options);

// Writes out_dir/config.json (pretty), model.safetensors (backbone), the Engram tables in
// model-engram-tables.safetensors, model.safetensors.index.json, engram_checksums.json (the
// tables' checksums, table_checksum.h) and, with a tokenizer, tokenizer.json. Creates out_dir if
// needed and overwrites those files. Streams: memory use is a few window buffers, never the model.
Status WriteSynthModel(const SynthOptions& options, const std::string& out_dir);

// The same model in memory (bit-identical values to WriteSynthModel's files for the same
// seed and dtype).
Result<SynthModel> SynthesizeInMemory(const SynthOptions& options);

}  // namespace engram
