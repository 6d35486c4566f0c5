#include "model/table_quantize.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/dtype.h"
#include "common/fp8.h"
#include "common/parallel.h"
#include "model/model_files.h"
#include "model/weights.h"

namespace engram {
namespace {

// Rows [begin, end) of `table` (F32/F16/BF16 [rows, dh]) as FP8 codes into `codes`, or (codes
// null) only their scales into `scales`, `threads` ways.
Status QuantizeRows(const Tensor& table, int64_t begin, int64_t end, uint8_t* codes,
                    uint8_t* scales, int threads) {
  const int64_t dh = table.dim(1);
  const size_t esize = DTypeSize(table.dtype);
  constexpr int64_t kRowsPerJob = 1024;
  const int64_t n = end - begin;
  return ParallelFor(
      static_cast<size_t>((n + kRowsPerJob - 1) / kRowsPerJob), threads, [&](size_t j) {
        std::vector<float> row(static_cast<size_t>(dh));
        std::vector<uint8_t> row_scales(static_cast<size_t>(dh / kFp8Block));
        const int64_t r0 = begin + static_cast<int64_t>(j) * kRowsPerJob;
        const int64_t r1 = std::min(end, r0 + kRowsPerJob);
        for (int64_t r = r0; r < r1; ++r) {
          ConvertToF32(table.dtype, table.ptr<char>() + static_cast<size_t>(r * dh) * esize,
                       row.data(), static_cast<size_t>(dh));
          if (codes != nullptr) {
            QuantizeFp8Row(row.data(), dh, codes + (r - begin) * dh, row_scales.data());
          } else {
            Fp8RowScales(row.data(), dh, scales + (r - begin) * (dh / kFp8Block));
          }
        }
        return Status::Ok();
      });
}

// Streams `table`'s FP8 codes, then its scales, window by window.
Status WriteFp8Table(const Tensor& src, int threads, WindowSink& sink) {
  const int64_t rows = src.dim(0), dh = src.dim(1);
  const size_t in_row = static_cast<size_t>(dh) * DTypeSize(src.dtype);
  const int64_t window = std::max<int64_t>(1, static_cast<int64_t>(kRewriteWindowBytes / in_row));
  for (int pass = 0; pass < 2; ++pass) {  // the codes, then the scales
    const int64_t out_row = pass == 0 ? dh : dh / kFp8Block;
    for (int64_t r = 0; r < rows; r += window) {
      const int64_t e = std::min(rows, r + window);
      std::vector<uint8_t>& buf = sink.Next();
      buf.resize(static_cast<size_t>((e - r) * out_row));
      ENGRAM_RETURN_IF_ERROR(QuantizeRows(src, r, e, pass == 0 ? buf.data() : nullptr,
                                          pass == 0 ? nullptr : buf.data(), threads));
      ENGRAM_RETURN_IF_ERROR(sink.Submit(pass == 0 ? static_cast<uint64_t>(e - r) * in_row : 0));
    }
  }
  return Status::Ok();
}

}  // namespace

Status PlanTableQuantize(const std::string& in, const ModelConfig& config, const TensorStore& store,
                         int threads, ShardRewritePlan* plan, QuantizeReport* report) {
  if (!config.engram) return InvalidArgument("{}: config.json has no Engram layers", in);
  const EngramConfig& e = *config.engram;
  for (const int l : e.layer_ids) {
    const std::string name = EngramTableName(e, l);
    const TensorInfo* info = store.Info(name);
    if (info == nullptr) return InvalidArgument("{}: no tensor {}", in, name);
    if (info->dtype != DType::kF32 && info->dtype != DType::kF16 && info->dtype != DType::kBF16) {
      return InvalidArgument("{}: table {} is {}, expected F32, F16 or BF16 to quantize", in, name,
                             DTypeName(info->dtype));
    }
    if (info->shape.size() != 2 || info->shape[1] % kFp8Block != 0) {
      return InvalidArgument(
          "{}: table {} has shape [{}], expected [rows, Dh] with Dh a multiple "
          "of {}",
          in, name, fmt::join(info->shape, ", "), kFp8Block);
    }
    const std::string scale = EngramScaleName(e, l);
    const int64_t rows = info->shape[0], dh = info->shape[1];
    plan->tensors[name] = {
        {{name, DType::kF8E4M3, info->shape}, {scale, DType::kF8E8M0, {rows, dh / kFp8Block}}},
        [threads](const Tensor& src, WindowSink& sink) {
          return WriteFp8Table(src, threads, sink);
        }};
    plan->checksums.push_back(name);
    plan->checksums.push_back(scale);
    report->table_bytes_in += info->nbytes;
    report->table_bytes_out += static_cast<uint64_t>(rows) * Fp8RowBytes(dh);
    ++report->tables;
  }
  return Status::Ok();
}

Result<QuantizeReport> QuantizeModelTables(const std::string& in, const std::string& out,
                                           const QuantizeOptions& options) {
  ENGRAM_RETURN_IF_ERROR(CheckRewriteTarget(in, out));
  ENGRAM_ASSIGN_OR_RETURN(ModelFiles model, OpenModel(in));
  QuantizeReport report;
  ShardRewritePlan plan;
  plan.threads = options.threads;
  plan.progress = options.progress;
  plan.what = "tables";
  ENGRAM_RETURN_IF_ERROR(PlanTableQuantize(in, model.config, model.store,
                                           DefaultThreads(options.threads), &plan, &report));
  ENGRAM_ASSIGN_OR_RETURN(ShardRewriteReport done, RewriteModel(in, model.store, out, plan));
  report.copied_bytes = done.copied_bytes;
  report.quantize_seconds = done.rewrite_seconds;
  report.total_seconds = done.total_seconds;
  return report;
}

}  // namespace engram
