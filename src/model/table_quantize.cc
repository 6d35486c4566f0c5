#include "model/table_quantize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/dtype.h"
#include "common/file_read.h"
#include "common/fp8.h"
#include "common/parallel.h"
#include "model/model_files.h"
#include "model/safetensors.h"
#include "model/table_checksum.h"
#include "model/weights.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr size_t kWindowBytes = size_t{64} << 20;  // source bytes per quantized window

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

class Progress {
 public:
  Progress(bool on, uint64_t total) : on_(on), total_(total) {}
  void Add(uint64_t bytes) {
    done_ += bytes;
    if (!on_ || (Since(last_) < 1.0 && done_ < total_)) return;
    last_ = Clock::now();
    const double s = Since(start_);
    std::fprintf(stderr, "quantize: %.2f / %.2f GB of tables read, %.2f GB/s\n", done_ / 1e9,
                 total_ / 1e9, s > 0 ? done_ / 1e9 / s : 0.0);
  }

 private:
  bool on_;
  uint64_t total_, done_ = 0;
  Clock::time_point start_ = Clock::now(), last_ = Clock::now();
};

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

// Appends windows to a writer on a thread of its own while the next window is computed.
class OverlappedWriter {
 public:
  explicit OverlappedWriter(SafetensorsWriter& w) : w_(w) {}
  ~OverlappedWriter() { (void)Wait(); }
  // The buffer to fill next (the one not being written).
  std::vector<uint8_t>& Next() { return buf_[next_]; }
  // Writes Next() (after the previous write ended) and flips the buffers.
  Status Submit() {
    ENGRAM_RETURN_IF_ERROR(Wait());
    std::vector<uint8_t>& b = buf_[next_];
    io_ = std::thread([this, &b] { status_ = w_.Append(b.data(), b.size()); });
    next_ ^= 1;
    return Status::Ok();
  }
  Status Wait() {
    if (io_.joinable()) io_.join();
    return status_;
  }

 private:
  SafetensorsWriter& w_;
  std::vector<uint8_t> buf_[2];
  int next_ = 0;
  std::thread io_;
  Status status_;
};

struct ShardTensor {
  std::string name;
  const TensorInfo* info = nullptr;
  std::string scale;  // a table to quantize: the name of its scales (EngramScaleName); else ""
  bool quantize() const { return !scale.empty(); }
};

Status WriteShard(const TensorStore& store, const std::string& path,
                  const std::vector<ShardTensor>& tensors, int threads, Progress& progress) {
  std::vector<SafetensorsWriter::Spec> specs;
  for (const ShardTensor& t : tensors) {
    if (!t.quantize()) {
      specs.push_back({t.name, t.info->dtype, t.info->shape});
      continue;
    }
    specs.push_back({t.name, DType::kF8E4M3, t.info->shape});
    specs.push_back({t.scale, DType::kF8E8M0, {t.info->shape[0], t.info->shape[1] / kFp8Block}});
  }
  ENGRAM_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path, specs, {{"format", "pt"}}));
  OverlappedWriter out(*writer);
  for (const ShardTensor& t : tensors) {
    ENGRAM_ASSIGN_OR_RETURN(Tensor src, store.Get(t.name));
    if (!t.quantize()) {
      ENGRAM_RETURN_IF_ERROR(out.Wait());
      ENGRAM_RETURN_IF_ERROR(writer->Append(src.data, src.nbytes()));
      continue;
    }
    const int64_t rows = src.dim(0), dh = src.dim(1);
    const size_t in_row = static_cast<size_t>(dh) * DTypeSize(src.dtype);
    const int64_t window = std::max<int64_t>(1, static_cast<int64_t>(kWindowBytes / in_row));
    for (int pass = 0; pass < 2; ++pass) {  // the codes, then the scales
      const int64_t out_row = pass == 0 ? dh : dh / kFp8Block;
      for (int64_t r = 0; r < rows; r += window) {
        const int64_t e = std::min(rows, r + window);
        std::vector<uint8_t>& buf = out.Next();
        buf.resize(static_cast<size_t>((e - r) * out_row));
        ENGRAM_RETURN_IF_ERROR(QuantizeRows(src, r, e, pass == 0 ? buf.data() : nullptr,
                                            pass == 0 ? nullptr : buf.data(), threads));
        ENGRAM_RETURN_IF_ERROR(out.Submit());
        if (pass == 0) progress.Add(static_cast<uint64_t>(e - r) * in_row);
      }
    }
  }
  ENGRAM_RETURN_IF_ERROR(out.Wait());
  return writer->Finish();
}

}  // namespace

Result<QuantizeReport> QuantizeModelTables(const std::string& in, const std::string& out,
                                           const QuantizeOptions& options) {
  const auto start = Clock::now();
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(in, out, ec)) {
    return FailedPrecondition("pack quantize: --out {} is the model directory itself", out);
  }
  ENGRAM_ASSIGN_OR_RETURN(ModelFiles model, OpenModel(in));
  if (!model.config.engram) return InvalidArgument("{}: config.json has no Engram layers", in);
  const EngramConfig& e = *model.config.engram;
  std::map<std::string, std::string> tables;  // table -> its scales
  QuantizeReport report;
  for (const int l : e.layer_ids) {
    const std::string name = EngramTableName(e, l);
    const TensorInfo* info = model.store.Info(name);
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
    tables[name] = EngramScaleName(e, l);
    report.table_bytes_in += info->nbytes;
    report.table_bytes_out += static_cast<uint64_t>(info->shape[0]) * Fp8RowBytes(info->shape[1]);
    ++report.tables;
  }
  fs::create_directories(out, ec);
  if (ec) return Unavailable("{}: cannot create the directory: {}", out, ec.message());

  // Shards by file, tensors in file order.
  std::map<std::string, std::vector<ShardTensor>> shards;
  for (const std::string& name : model.store.Names()) {
    const TensorInfo* info = model.store.Info(name);
    auto it = tables.find(name);
    shards[info->file].push_back({name, info, it != tables.end() ? it->second : std::string()});
  }
  Progress progress(options.progress, report.table_bytes_in);
  const int threads = DefaultThreads(options.threads);
  nlohmann::json weight_map = nlohmann::json::object();
  const auto q_start = Clock::now();
  for (auto& [file, tensors] : shards) {
    std::sort(tensors.begin(), tensors.end(), [](const ShardTensor& a, const ShardTensor& b) {
      return a.info->file_offset < b.info->file_offset;
    });
    const std::string base = fs::path(file).filename().string();
    const bool has_table = std::any_of(tensors.begin(), tensors.end(),
                                       [](const ShardTensor& t) { return t.quantize(); });
    for (const ShardTensor& t : tensors) {
      weight_map[t.name] = base;
      if (t.quantize()) weight_map[t.scale] = base;
    }
    const std::string dst = (fs::path(out) / base).string();
    if (has_table) {
      ENGRAM_RETURN_IF_ERROR(WriteShard(model.store, dst, tensors, threads, progress)
                                 .WithContext("pack quantize: " + dst));
    } else {
      fs::copy_file(file, dst, fs::copy_options::overwrite_existing, ec);
      if (ec) return Unavailable("{}: cannot copy to {}: {}", file, dst, ec.message());
      report.copied_bytes += fs::file_size(file, ec);
    }
  }
  report.quantize_seconds = Since(q_start);
  // The other files: config, tokenizer, compression map (not the old index and checksums).
  for (const auto& entry : fs::directory_iterator(in, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || entry.path().extension() == ".safetensors" ||
        name == "model.safetensors.index.json" || name == kTableChecksumsFile) {
      continue;
    }
    fs::copy_file(entry.path(), fs::path(out) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return Unavailable("{}: cannot copy: {}", entry.path().string(), ec.message());
    report.copied_bytes += entry.file_size(ec);
  }
  if (shards.size() > 1 || fs::exists(fs::path(in) / "model.safetensors.index.json", ec)) {
    nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}};
    const std::string path = (fs::path(out) / "model.safetensors.index.json").string();
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return Unavailable("{}: cannot write", path);
    const std::string text = index.dump(2) + "\n";
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    if (std::fclose(f) != 0 || !ok) return Unavailable("{}: short write", path);
  }
  std::vector<std::string> names;
  for (const auto& [table, scale] : tables) {
    names.push_back(table);
    names.push_back(scale);
  }
  ENGRAM_RETURN_IF_ERROR(WriteTableChecksums(out, options.threads, names));
  report.total_seconds = Since(start);
  return report;
}

}  // namespace engram
