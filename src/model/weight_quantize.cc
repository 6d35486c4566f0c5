#include "model/weight_quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/dtype.h"
#include "common/file_read.h"
#include "common/int8_block.h"
#include "common/parallel.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/shard_rewrite.h"
#include "model/table_quantize.h"
#include "model/weights.h"

namespace engram {
namespace {

namespace fs = std::filesystem;

constexpr float kE4M3Max = 448.f;

struct Blocks {
  int64_t n, k;  // output rows, inputs per scale
};

Blocks BlocksOf(WeightFormat f) {
  return f == WeightFormat::kFp8 ? Blocks{128, 128} : Blocks{1, kInt8WeightBlock};
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }

// Whether `e` is a weight this run quantizes.
bool Quantizes(const ExpectedTensor& e, const WeightQuantizeOptions& o) {
  return e.role == TensorRole::kLinear || e.role == TensorRole::kOutputLinear ||
         (e.role == TensorRole::kEngramProj && !o.keep_engram) ||
         (e.role == TensorRole::kLmHead && !o.keep_lm_head);
}

// One weight being quantized: the source, where errors point, and the format.
struct LinearSource {
  const Tensor* src;
  const TensorInfo* info;
  WeightFormat format;
  int threads;
  size_t window_bytes;
};

Status NotFinite(const LinearSource& w, float v, int64_t o, int64_t i) {
  return InvalidArgument("{}: tensor {} holds {} at [{}, {}]: only finite weights can be quantized",
                         w.info->file, w.info->name, v, o, i);
}

// Rows [r0, r0 + h) of the weight, columns [c0, c0 + cols), as F32 into out [h, cols]; checks
// that every value is finite.
Status LoadTile(const LinearSource& w, int64_t r0, int64_t h, int64_t c0, int64_t cols,
                float* out) {
  const int64_t in = w.src->dim(1);
  const size_t esize = DTypeSize(w.src->dtype);
  for (int64_t r = 0; r < h; ++r) {
    float* row = out + r * cols;
    ConvertToF32(w.src->dtype, w.src->ptr<char>() + static_cast<size_t>((r0 + r) * in + c0) * esize,
                 row, static_cast<size_t>(cols));
    for (int64_t i = 0; i < cols; ++i) {
      if (!std::isfinite(row[i])) return NotFinite(w, row[i], r0 + r, c0 + i);
    }
  }
  return Status::Ok();
}

void StoreScale(float s, uint8_t* scales, int64_t index) {
  std::memcpy(scales + index * static_cast<int64_t>(sizeof(float)), &s, sizeof(float));
}

// One row block of fp8: rows [r0, r0 + h), h <= 128. codes at the block's first row; scales
// (F32 bytes) at the block's row of scales. Either may be null.
Status Fp8RowBlock(const LinearSource& w, int64_t r0, int64_t h, uint8_t* codes, uint8_t* scales) {
  const int64_t in = w.src->dim(1), bk = BlocksOf(WeightFormat::kFp8).k;
  std::vector<float> tile(static_cast<size_t>(h * bk));
  for (int64_t c0 = 0, b = 0; c0 < in; c0 += bk, ++b) {
    const int64_t cols = std::min(bk, in - c0);
    ENGRAM_RETURN_IF_ERROR(LoadTile(w, r0, h, c0, cols, tile.data()));
    float amax = 0.f;
    for (int64_t i = 0; i < h * cols; ++i) amax = std::max(amax, std::fabs(tile[i]));
    const float scale_inv = amax / kE4M3Max;
    if (scales != nullptr) StoreScale(scale_inv, scales, b);
    if (codes == nullptr) continue;
    for (int64_t r = 0; r < h; ++r) {
      uint8_t* q = codes + r * in + c0;
      const float* v = tile.data() + r * cols;
      for (int64_t i = 0; i < cols; ++i) q[i] = amax > 0.f ? F32ToE4M3(v[i] / scale_inv) : 0;
    }
  }
  return Status::Ok();
}

// One row of int8: QuantizeInt8Block per 32 inputs.
Status Int8Row(const LinearSource& w, int64_t r, std::vector<float>& row, uint8_t* codes,
               uint8_t* scales) {
  const int64_t in = w.src->dim(1);
  ENGRAM_RETURN_IF_ERROR(LoadTile(w, r, 1, 0, in, row.data()));
  int8_t scratch[kInt8WeightBlock];
  for (int64_t c0 = 0, b = 0; c0 < in; c0 += kInt8WeightBlock, ++b) {
    const int n = static_cast<int>(std::min<int64_t>(kInt8WeightBlock, in - c0));
    int8_t* q = codes != nullptr ? reinterpret_cast<int8_t*>(codes + c0) : scratch;
    const float scale = QuantizeInt8Block(row.data() + c0, n, q);
    if (scales != nullptr) StoreScale(scale, scales, b);
  }
  return Status::Ok();
}

// Rows [begin, end) (begin a multiple of the block rows) into codes [end - begin, I] and/or the
// F32 bytes of their scales [ceil((end - begin) / block_n), ceil(I / block_k)], in parallel.
Status QuantizeRows(const LinearSource& w, int64_t begin, int64_t end, uint8_t* codes,
                    uint8_t* scales) {
  const Blocks b = BlocksOf(w.format);
  const int64_t in = w.src->dim(1), kb = CeilDiv(in, b.k);
  const size_t scale_row = static_cast<size_t>(kb) * sizeof(float);
  // Jobs of whole row blocks, at least 64 rows.
  const int64_t job_rows = b.n * CeilDiv(64, b.n);
  return ParallelFor(
      static_cast<size_t>(CeilDiv(end - begin, job_rows)), w.threads, [&](size_t j) -> Status {
        const int64_t r0 = begin + static_cast<int64_t>(j) * job_rows;
        const int64_t r1 = std::min(end, r0 + job_rows);
        std::vector<float> row(w.format == WeightFormat::kInt8 ? static_cast<size_t>(in) : 0);
        for (int64_t r = r0; r < r1; r += b.n) {
          const int64_t h = std::min(b.n, r1 - r);
          uint8_t* c = codes != nullptr ? codes + (r - begin) * in : nullptr;
          uint8_t* s = scales != nullptr ? scales + (r - begin) / b.n * scale_row : nullptr;
          ENGRAM_RETURN_IF_ERROR(w.format == WeightFormat::kFp8 ? Fp8RowBlock(w, r, h, c, s)
                                                                : Int8Row(w, r, row, c, s));
        }
        return Status::Ok();
      });
}

// Streams the codes window by window, then the scales: kept from the codes pass when they fit
// in a window's bytes, else made by a second pass over the weight.
Status WriteLinear(const LinearSource& w, WindowSink& sink) {
  const Blocks b = BlocksOf(w.format);
  const int64_t out = w.src->dim(0), in = w.src->dim(1), kb = CeilDiv(in, b.k);
  const size_t in_row = static_cast<size_t>(in) * DTypeSize(w.src->dtype);
  const size_t scale_row = static_cast<size_t>(kb) * sizeof(float);
  const int64_t window =
      std::max<int64_t>(1, static_cast<int64_t>(w.window_bytes / in_row) / b.n) * b.n;
  const size_t scale_bytes = static_cast<size_t>(CeilDiv(out, b.n)) * scale_row;
  std::vector<uint8_t> kept(scale_bytes <= w.window_bytes ? scale_bytes : 0);
  for (int64_t r = 0; r < out; r += window) {
    const int64_t e = std::min(out, r + window);
    std::vector<uint8_t>& buf = sink.Next();
    buf.resize(static_cast<size_t>((e - r) * in));
    uint8_t* scales =
        kept.empty() ? nullptr : kept.data() + static_cast<size_t>(r / b.n) * scale_row;
    ENGRAM_RETURN_IF_ERROR(QuantizeRows(w, r, e, buf.data(), scales));
    ENGRAM_RETURN_IF_ERROR(sink.Submit(static_cast<uint64_t>(e - r) * in_row));
  }
  if (!kept.empty() || scale_bytes == 0) {
    sink.Next().swap(kept);
    return sink.Submit(0);
  }
  for (int64_t r = 0; r < out; r += window) {
    const int64_t e = std::min(out, r + window);
    std::vector<uint8_t>& buf = sink.Next();
    buf.resize(static_cast<size_t>(CeilDiv(e - r, b.n)) * scale_row);
    ENGRAM_RETURN_IF_ERROR(QuantizeRows(w, r, e, nullptr, buf.data()));
    ENGRAM_RETURN_IF_ERROR(sink.Submit(0));
  }
  return Status::Ok();
}

// The output config.json: the input's object (key order kept) with "quantization_config".
Result<std::string> QuantizedConfigText(const std::string& text, const std::string& path,
                                        const WeightQuantizeOptions& o) {
  using ordered = nlohmann::ordered_json;
  ordered j = ordered::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Internal("{}: cannot re-read the JSON", path);
  const Blocks b = BlocksOf(o.format);
  ordered q = ordered::object();
  q["quant_method"] = o.format == WeightFormat::kFp8 ? "fp8" : "engram_int8";
  if (o.format == WeightFormat::kFp8) q["fmt"] = "e4m3";
  q["activation_scheme"] = "dynamic";
  q["weight_block_size"] = {b.n, b.k};
  std::vector<std::string> kept;
  if (o.keep_lm_head) kept.push_back("lm_head");
  if (o.keep_engram) kept.push_back("engram");
  if (!kept.empty()) q["modules_to_not_convert"] = kept;
  j["quantization_config"] = std::move(q);
  std::string out = j.dump(2) + "\n";
  // What the loader will read back (config.h's WeightQuantization).
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json check, ParseJson(out, path));
  auto parsed = ModelConfig::FromJson(check, path);
  if (!parsed.ok() || !parsed->quantization || parsed->quantization->block_n != b.n ||
      parsed->quantization->block_k != b.k) {
    return Internal("{}: the quantization_config written does not parse back: {}", path,
                    parsed.ok() ? "different blocks" : parsed.status().ToString());
  }
  return out;
}

// The checks of the header, then a rewrite per Linear weight into *plan.
Status PlanWeights(const ModelConfig& config, const TensorStore& store,
                   const WeightQuantizeOptions& o, int threads, ShardRewritePlan* plan,
                   WeightQuantizeReport* report) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<ExpectedTensor> expected, ExpectedTensors(config));
  const Blocks b = BlocksOf(o.format);
  const DType code_type = o.format == WeightFormat::kFp8 ? DType::kF8E4M3 : DType::kI8;
  for (const ExpectedTensor& e : expected) {
    if (!Quantizes(e, o)) continue;
    const TensorInfo* info = store.Info(e.name);
    if (info == nullptr) continue;  // CheckExpectedTensors names it
    if (info->dtype == DType::kF8E4M3 || info->dtype == DType::kI8) {
      return InvalidArgument(
          "{}: tensor {} is {}: already quantized (pack quantize --weights needs F32, F16 or "
          "BF16 Linear weights)",
          info->file, e.name, DTypeName(info->dtype));
    }
    if (!IsFloat(info->dtype)) {
      return InvalidArgument("{}: tensor {} is {}, expected F32, F16 or BF16 to quantize",
                             info->file, e.name, DTypeName(info->dtype));
    }
    const std::string scale = WeightScaleInvName(e.name);
    if (const TensorInfo* s = store.Info(scale)) {
      return InvalidArgument(
          "{}: tensor {} is already present beside {}: the model looks quantized already", s->file,
          scale, e.name);
    }
  }
  ENGRAM_RETURN_IF_ERROR(CheckExpectedTensors(config, store));
  for (const ExpectedTensor& e : expected) {
    if (!Quantizes(e, o)) continue;
    const TensorInfo* info = store.Info(e.name);
    const int64_t rows = info->shape[0], cols = info->shape[1];
    const std::vector<int64_t> scale_shape = {CeilDiv(rows, b.n), CeilDiv(cols, b.k)};
    plan->tensors[e.name] = {
        {{e.name, code_type, info->shape}, {WeightScaleInvName(e.name), DType::kF32, scale_shape}},
        [info, format = o.format, threads, window = o.window_bytes](const Tensor& src,
                                                                    WindowSink& sink) {
          return WriteLinear(LinearSource{&src, info, format, threads, window}, sink);
        }};
    ++report->weights;
    report->weight_bytes_in += info->nbytes;
    report->weight_bytes_out += static_cast<uint64_t>(rows * cols) +
                                static_cast<uint64_t>(scale_shape[0] * scale_shape[1]) * 4;
  }
  return Status::Ok();
}

}  // namespace

Result<WeightFormat> ParseWeightFormat(std::string_view name) {
  if (name == "int8") return WeightFormat::kInt8;
  if (name == "fp8") return WeightFormat::kFp8;
  return InvalidArgument(
      "unknown weight format \"{}\" (expected int8: I8 codes with an F32 scale per row per 32 "
      "inputs, or fp8: F8_E4M3 codes with an F32 scale per 128x128 block)",
      name);
}

std::string_view WeightFormatName(WeightFormat format) {
  return format == WeightFormat::kFp8 ? "fp8" : "int8";
}

std::string WeightScaleInvName(const std::string& weight) { return weight + "_scale_inv"; }

Result<WeightQuantizeReport> QuantizeModelWeights(const std::string& in, const std::string& out,
                                                  const WeightQuantizeOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(in, ec)) return NotFound("{}: not a model directory", in);
  ENGRAM_RETURN_IF_ERROR(CheckRewriteTarget(in, out));
  const std::string config_path = (fs::path(in) / "config.json").string();
  ENGRAM_ASSIGN_OR_RETURN(std::string text,
                          ReadRegularFile(config_path, kMaxConfigFileBytes, "model config"));
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(text, config_path));
  if (j.is_object() && j.contains("quantization_config")) {
    const nlohmann::json& q = j.at("quantization_config");
    const std::string method = q.is_object() && q.contains("quant_method")
                                   ? q.at("quant_method").dump()
                                   : std::string("unnamed");
    return InvalidArgument(
        "{}: already has a quantization_config (quant_method {}): the model is quantized; pack "
        "quantize --weights needs F32, F16 or BF16 Linear weights",
        config_path, method);
  }
  ENGRAM_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromJson(j, config_path));
  ENGRAM_ASSIGN_OR_RETURN(TensorStore store, TensorStore::OpenDirectory(in));

  const int threads = DefaultThreads(options.threads);
  WeightQuantizeReport report;
  ShardRewritePlan plan;
  plan.threads = options.threads;
  plan.progress = options.progress;
  plan.what = options.tables_fp8 ? "tables and weights" : "weights";
  ENGRAM_RETURN_IF_ERROR(PlanWeights(config, store, options, threads, &plan, &report));
  if (options.tables_fp8) {
    QuantizeReport tables;
    ENGRAM_RETURN_IF_ERROR(PlanTableQuantize(in, config, store, threads, &plan, &tables));
    report.tables = tables.tables;
    report.table_bytes_in = tables.table_bytes_in;
    report.table_bytes_out = tables.table_bytes_out;
  }
  ENGRAM_ASSIGN_OR_RETURN(plan.config_json, QuantizedConfigText(text, config_path, options));
  ENGRAM_ASSIGN_OR_RETURN(ShardRewriteReport done, RewriteModel(in, store, out, plan));
  report.copied_bytes = done.copied_bytes;
  report.quantize_seconds = done.rewrite_seconds;
  report.total_seconds = done.total_seconds;
  return report;
}

}  // namespace engram
