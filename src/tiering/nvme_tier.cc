#include "tiering/nvme_tier.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>

#include "common/logging.h"
#include "tiering/row_cache.h"

namespace engram {
namespace {

struct Table {
  std::string name;
  IoUringReader* reader = nullptr;
  uint64_t file_offset = 0;
  int64_t rows = 0;
};

class NvmeTier final : public TableTier {
 public:
  NvmeTier(std::vector<std::unique_ptr<IoUringReader>> readers, std::vector<Table> tables,
           std::unique_ptr<RowCache> cache, DType dtype, int64_t dh)
      : readers_(std::move(readers)),
        tables_(std::move(tables)),
        cache_(std::move(cache)),
        dtype_(dtype),
        dh_(dh) {}
  std::string_view name() const override { return "nvme"; }
  int num_layers() const override { return static_cast<int>(tables_.size()); }
  DType dtype() const override { return dtype_; }
  int64_t row_elems() const override { return dh_; }
  int64_t rows(int layer) const override { return tables_.at(layer).rows; }
  int64_t resident_bytes() const override { return static_cast<int64_t>(cache_->resident_bytes()); }
  TierStats stats() const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }
  Status ReadRows(int layer, std::span<const int64_t> rows, void* dst,
                  std::span<uint8_t> failed) override;

 private:
  std::vector<std::unique_ptr<IoUringReader>> readers_;
  std::vector<Table> tables_;
  std::unique_ptr<RowCache> cache_;
  DType dtype_;
  int64_t dh_;
  // Per-call scratch, reused.
  std::vector<ReadRequest> reqs_;
  std::vector<ReadRequest*> req_ptrs_;
  std::vector<size_t> miss_pos_;
  mutable std::mutex stats_mu_;
  TierStats stats_;  // GUARDED_BY(stats_mu_)
};

Status NvmeTier::ReadRows(int layer, std::span<const int64_t> rows, void* dst,
                          std::span<uint8_t> failed) {
  const auto start = std::chrono::steady_clock::now();
  if (layer < 0 || layer >= num_layers()) {
    return OutOfRange("nvme tier: layer {} outside [0, {})", layer, num_layers());
  }
  const Table& table = tables_[layer];
  for (const int64_t r : rows) {
    if (r < 0 || r >= table.rows) {
      return OutOfRange("nvme tier: row {} outside layer {}'s table {} of {} rows", r, layer,
                        table.name, table.rows);
    }
  }
  if (!failed.empty() && failed.size() != rows.size()) {
    return Internal("nvme tier: {} failure flags for {} rows", failed.size(), rows.size());
  }
  const size_t rb = row_bytes();
  auto* out = static_cast<std::byte*>(dst);
  miss_pos_.clear();
  for (size_t i = 0; i < rows.size(); ++i) {
    if (const void* hit = cache_->Lookup(layer, rows[i])) {
      std::memcpy(out + i * rb, hit, rb);
    } else {
      miss_pos_.push_back(i);
    }
  }
  const uint64_t hits = rows.size() - miss_pos_.size();
  Status status;
  uint64_t io_reads = 0, io_retries = 0;
  if (!miss_pos_.empty()) {
    reqs_.assign(miss_pos_.size(), ReadRequest{});
    req_ptrs_.resize(miss_pos_.size());
    for (size_t k = 0; k < miss_pos_.size(); ++k) {
      const size_t i = miss_pos_[k];
      ReadRequest& req = reqs_[k];
      req.offset = table.file_offset + static_cast<uint64_t>(rows[i]) * rb;
      req.length = static_cast<uint32_t>(rb);
      req.dest = out + i * rb;
      req_ptrs_[k] = &req;
    }
    const ReaderStats before = table.reader->stats();
    status = table.reader->ReadBatch(req_ptrs_);
    const ReaderStats& after = table.reader->stats();
    io_reads = after.reads_submitted - before.reads_submitted;
    io_retries = after.retries - before.retries;
    uint64_t failures = 0;
    for (size_t k = 0; k < miss_pos_.size(); ++k) {
      const size_t i = miss_pos_[k];
      if (reqs_[k].status.ok()) {
        cache_->Offer(layer, rows[i], out + i * rb);
      } else {
        ++failures;
        std::memset(out + i * rb, 0, rb);  // never hand out a partial row
        if (!failed.empty()) failed[i] = 1;
      }
    }
    if (failures > 0) {
      spdlog::warn("nvme tier: layer {} table {}: {} of {} rows unreadable after retries: {}",
                   layer, table.name, failures, rows.size(), status.message());
    }
    if (!status.ok()) {
      status = status.WithContext(fmt::format("nvme tier: layer {} table {}", layer, table.name));
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.rows_requested += rows.size();
  if (status.ok()) stats_.bytes_moved += rows.size() * rb;
  stats_.cache_hits += hits;
  stats_.cache_misses += miss_pos_.size();
  stats_.io_reads += io_reads;
  stats_.io_retries += io_retries;
  stats_.read_seconds += secs;
  return status;
}

std::string ShapeStr(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

Result<std::unique_ptr<TableTier>> CreateNvmeTier(const std::vector<TensorInfo>& tables,
                                                  const NvmeTierOptions& options) {
  if (tables.empty()) return InvalidArgument("nvme tier: no Engram tables");
  const TensorInfo& first = tables[0];
  for (const TensorInfo& t : tables) {
    if (t.file.empty()) {
      return FailedPrecondition(
          "nvme tier: table {} is in memory, not in a file; the NVMe tier reads tables in "
          "place from their files; write the model to disk with engram pack synth",
          t.name);
    }
    if (t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0) {
      return InvalidArgument("nvme tier: {}: table {} has shape {}, expected [rows > 0, Dh > 0]",
                             t.file, t.name, ShapeStr(t.shape));
    }
    const uint64_t expected =
        static_cast<uint64_t>(t.shape[0]) * static_cast<uint64_t>(t.shape[1]) * DTypeSize(t.dtype);
    if (t.nbytes != expected) {
      return InvalidArgument("nvme tier: {}: table {} holds {} bytes, expected {} ({} {})", t.file,
                             t.name, t.nbytes, expected, DTypeName(t.dtype), ShapeStr(t.shape));
    }
    if (t.dtype != first.dtype || t.shape[1] != first.shape[1]) {
      return InvalidArgument(
          "nvme tier: {}: table {} is {} {}, but {} is {} {}; all Engram tables must share "
          "dtype and Dh",
          t.file, t.name, DTypeName(t.dtype), ShapeStr(t.shape), first.name, DTypeName(first.dtype),
          ShapeStr(first.shape));
    }
  }
  const size_t rb = static_cast<size_t>(first.shape[1]) * DTypeSize(first.dtype);
  ReaderOptions ropts = options.reader;
  ropts.max_request_bytes = std::max<uint32_t>(ropts.max_request_bytes, static_cast<uint32_t>(rb));

  std::vector<std::unique_ptr<IoUringReader>> readers;
  std::map<std::string, IoUringReader*> by_file;
  std::vector<Table> out;
  for (const TensorInfo& t : tables) {
    IoUringReader*& reader = by_file[t.file];
    if (reader == nullptr) {
      auto r = IoUringReader::Open(t.file, ropts);
      if (!r.ok()) return r.status().WithContext("nvme tier: table " + t.name);
      if (!(*r)->direct_io()) {
        spdlog::warn("nvme tier: {} is read with buffered I/O (no O_DIRECT)", t.file);
      }
      readers.push_back(std::move(r).value());
      reader = readers.back().get();
    }
    if (t.file_offset + t.nbytes > reader->file_size()) {
      return OutOfRange("nvme tier: {}: table {} [{}, {}) runs past the end of the file ({} bytes)",
                        t.file, t.name, t.file_offset, t.file_offset + t.nbytes,
                        reader->file_size());
    }
    out.push_back({t.name, reader, t.file_offset, t.shape[0]});
  }
  ENGRAM_ASSIGN_OR_RETURN(
      auto cache, RowCache::Create(rb, options.cache_bytes, options.policy, options.cache_page));
  spdlog::info("nvme tier: {} Engram tables in {} file(s), {} B rows, row cache {} slots ({})",
               tables.size(), readers.size(), rb, cache->capacity(), cache->policy().name());
  return std::unique_ptr<TableTier>(std::make_unique<NvmeTier>(
      std::move(readers), std::move(out), std::move(cache), first.dtype, first.shape[1]));
}

}  // namespace engram
