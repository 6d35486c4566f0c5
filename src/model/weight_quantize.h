// QuantizeModelWeights: `engram pack quantize --weights int8|fp8`. Copies a model directory with
// the backbone's Linear weights (q/k/v/o_proj, gate/up/down_proj and an untied lm_head: the
// ExpectedTensors of roles kLinear, kOutputLinear, kLmHead) stored quantized, in the format
// config.h's WeightQuantization reads (docs/formats.md, "Quantized Linear weights (files)"):
// each `<name>.weight` [O, I] becomes codes of one byte, and `<name>.weight_scale_inv` F32
// [ceil(O / block_n), ceil(I / block_k)] goes beside it in the same shard; the dequantized
// weight is q[o, i] * scale_inv[o / block_n, i / block_k].
//  - int8 ("engram_int8", I8, blocks [1, 32]): codes and scales are QuantizeInt8Block's
//    (common/int8_block.h), per row per 32 inputs (the last block of a row may be shorter), so
//    the model loads bit-identical to the CPU backend's load-time int8 quantization.
//  - fp8 ("fp8", Hugging Face's fine-grained FP8: F8_E4M3, blocks [128, 128]): scale_inv =
//    amax / 448 of the block (0 for an all-zero block, whose codes are 0), codes = F32ToE4M3(w /
//    scale_inv), the quotient taken in F32, rounded to nearest even and saturating at +-448.
// config.json is the input's JSON with "quantization_config" added (every other key kept, in
// its order); with keep_lm_head (keep_engram) the lm_head (the Engram projections) stay as they
// are and quantization_config lists "lm_head" ("engram") in "modules_to_not_convert".
// Embeddings, norms, biases, the Engram tables and the rest of the module are copied unchanged; the
// index gains the scales; engram_checksums.json is written when the input has one (or with
// tables_fp8), as shard_rewrite.h describes.
//
// Streaming: 64 MiB windows of rows (whole row blocks), quantized on `threads` threads while the
// previous window is written; the scales are kept from that pass when they fit in a window
// (always for fp8; int8 weights up to 512M values), else a second pass over the weight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/shard_rewrite.h"

namespace engram {

enum class WeightFormat : uint8_t { kInt8, kFp8 };

// "int8" | "fp8"; INVALID_ARGUMENT naming the value and the accepted ones otherwise.
Result<WeightFormat> ParseWeightFormat(std::string_view name);
std::string_view WeightFormatName(WeightFormat format);  // "int8" | "fp8"

// The scale tensor of a quantized Linear weight: "<name>.weight" -> "<name>.weight_scale_inv".
std::string WeightScaleInvName(const std::string& weight);

struct WeightQuantizeOptions {
  WeightFormat format = WeightFormat::kInt8;
  bool keep_lm_head = false;  // lm_head stays F32/F16/BF16 ("modules_to_not_convert")
  // The Engram module's value_proj / key_projs.0 stay F32/F16/BF16 ("modules_to_not_convert":
  // "engram"); by default they are quantized like the backbone's Linear weights.
  bool keep_engram = false;
  bool tables_fp8 = false;  // also re-store the Engram tables as QuantizeModelTables does
  int threads = 0;          // 0: DefaultThreads
  bool progress = true;     // GB read and GB/s on stderr, at most once a second
  // Input bytes per window (whole row blocks, at least one); a weight whose scales fit in one
  // is read once, else its scales are a second pass. Tests make it small.
  size_t window_bytes = kRewriteWindowBytes;
};

struct WeightQuantizeReport {
  int weights = 0;                // Linear weights quantized
  uint64_t weight_bytes_in = 0;   // their bytes before
  uint64_t weight_bytes_out = 0;  // codes + scales after
  int tables = 0;                 // with tables_fp8: as QuantizeReport's
  uint64_t table_bytes_in = 0;
  uint64_t table_bytes_out = 0;
  uint64_t copied_bytes = 0;    // other shards and files copied
  double quantize_seconds = 0;  // writing the rewritten shards
  double total_seconds = 0;     // everything, checksums included
};

// INVALID_ARGUMENT, naming the file and tensor, when config.json already has a
// quantization_config, a Linear weight is not F32/F16/BF16 (F8_E4M3 or I8: already quantized)
// or already has a weight_scale_inv, or a weight holds a NaN or infinity (naming its index);
// with tables_fp8, QuantizeModelTables' errors; FAILED_PRECONDITION when `out` is `in`; the
// model is otherwise checked as OpenModel does (CheckExpectedTensors).
Result<WeightQuantizeReport> QuantizeModelWeights(const std::string& in, const std::string& out,
                                                  const WeightQuantizeOptions& options);

}  // namespace engram
