#include "tiering/nvme_tier.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>

#include <fmt/ranges.h>

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
           std::unique_ptr<RowCache> cache, DType dtype, int64_t dh, uint64_t merge_bytes,
           uint64_t merge_buffer_bytes)
      : readers_(std::move(readers)),
        tables_(std::move(tables)),
        cache_(std::move(cache)),
        dtype_(dtype),
        dh_(dh),
        merge_bytes_(merge_bytes),
        merge_buffer_bytes_(merge_buffer_bytes) {}
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
  // Neighbouring missed rows read as one request: miss_pos_[first, last) in file order, the
  // file range [begin, end) they span, and where that range lands in merge_buf_.
  struct Run {
    size_t first = 0, last = 0;
    uint64_t begin = 0, end = 0;
    size_t buf_offset = 0;
  };
  // Reads the rows at miss_pos_ into out (+ i * row_bytes), offering each to the cache;
  // failed rows are zeroed and flagged. Returns the first failure's status.
  Status ReadMisses(int layer, std::span<const int64_t> rows, std::byte* out,
                    std::span<uint8_t> failed);
  void SetRowFailed(size_t i, std::byte* out, std::span<uint8_t> failed);

  std::vector<std::unique_ptr<IoUringReader>> readers_;
  std::vector<Table> tables_;
  std::unique_ptr<RowCache> cache_;
  DType dtype_;
  int64_t dh_;
  uint64_t merge_bytes_;
  uint64_t merge_buffer_bytes_;
  // Per-call scratch, reused.
  std::vector<ReadRequest> reqs_;
  std::vector<ReadRequest*> req_ptrs_;
  std::vector<size_t> miss_pos_;
  std::vector<Run> runs_;
  std::vector<std::byte> merge_buf_;  // merged reads of one wave
  std::vector<size_t> split_;         // rows of failed merged reads, read again one by one
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
    const ReaderStats before = table.reader->stats();
    status = ReadMisses(layer, rows, out, failed);
    const ReaderStats& after = table.reader->stats();
    io_reads = after.reads_submitted - before.reads_submitted;
    io_retries = after.retries - before.retries;
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

void NvmeTier::SetRowFailed(size_t i, std::byte* out, std::span<uint8_t> failed) {
  std::memset(out + i * row_bytes(), 0, row_bytes());  // never hand out a partial row
  if (!failed.empty()) failed[i] = 1;
}

Status NvmeTier::ReadMisses(int layer, std::span<const int64_t> rows, std::byte* out,
                            std::span<uint8_t> failed) {
  const Table& table = tables_[static_cast<size_t>(layer)];
  const size_t rb = row_bytes();
  const uint64_t align = table.reader->alignment();
  auto row_offset = [&](size_t i) {
    return table.file_offset + static_cast<uint64_t>(rows[i]) * rb;
  };
  // File order, then runs of rows whose aligned blocks overlap or touch.
  std::sort(miss_pos_.begin(), miss_pos_.end(),
            [&](size_t a, size_t b) { return rows[a] < rows[b]; });
  runs_.clear();
  for (size_t k = 0; k < miss_pos_.size(); ++k) {
    const uint64_t begin = row_offset(miss_pos_[k]);
    const uint64_t end = begin + rb;
    if (!runs_.empty()) {
      Run& run = runs_.back();
      const bool touches = begin / align * align <= (run.end + align - 1) / align * align;
      if (touches && end - run.begin <= merge_bytes_) {
        run.end = std::max(run.end, end);
        run.last = k + 1;
        continue;
      }
    }
    runs_.push_back({k, k + 1, begin, end, 0});
  }

  Status status;  // the first row failure that stands
  uint64_t failures = 0;
  split_.clear();
  // Waves of runs whose merged spans fit merge_buf_ (a merged span is at most merge_bytes_, so
  // every wave takes at least one run); lone rows are read straight into dst.
  const size_t buf_cap = std::max<size_t>(merge_buffer_bytes_, merge_bytes_);
  for (size_t w = 0; w < runs_.size();) {
    size_t buf_bytes = 0, w_end = w;
    for (; w_end < runs_.size(); ++w_end) {
      Run& run = runs_[w_end];
      if (run.last - run.first == 1) continue;
      const size_t span = run.end - run.begin;
      if (buf_bytes + span > buf_cap) break;
      run.buf_offset = buf_bytes;
      buf_bytes += span;
    }
    if (merge_buf_.size() < buf_bytes) merge_buf_.resize(buf_cap);
    reqs_.assign(w_end - w, ReadRequest{});
    req_ptrs_.resize(w_end - w);
    for (size_t j = 0; j < w_end - w; ++j) {
      const Run& run = runs_[w + j];
      ReadRequest& req = reqs_[j];
      req.offset = run.begin;
      req.length = static_cast<uint32_t>(run.end - run.begin);
      req.dest = run.last - run.first > 1 ? static_cast<void*>(merge_buf_.data() + run.buf_offset)
                                          : static_cast<void*>(out + miss_pos_[run.first] * rb);
      req_ptrs_[j] = &req;
    }
    (void)table.reader->ReadBatch(req_ptrs_);  // each request says how it ended
    for (size_t j = 0; j < w_end - w; ++j) {
      const Run& run = runs_[w + j];
      const bool merged = run.last - run.first > 1;
      if (!reqs_[j].status.ok()) {
        if (merged) {
          for (size_t k = run.first; k < run.last; ++k) split_.push_back(miss_pos_[k]);
        } else {
          if (status.ok()) status = reqs_[j].status;
          ++failures;
          SetRowFailed(miss_pos_[run.first], out, failed);
        }
        continue;
      }
      for (size_t k = run.first; k < run.last; ++k) {
        const size_t i = miss_pos_[k];
        if (merged) {
          std::memcpy(out + i * rb,
                      merge_buf_.data() + run.buf_offset + (row_offset(i) - run.begin), rb);
        }
        cache_->Offer(layer, rows[i], out + i * rb);
      }
    }
    w = w_end;
  }
  if (!split_.empty()) {  // a merged read failed: find the rows that really cannot be read
    reqs_.assign(split_.size(), ReadRequest{});
    req_ptrs_.resize(split_.size());
    for (size_t k = 0; k < split_.size(); ++k) {
      reqs_[k].offset = row_offset(split_[k]);
      reqs_[k].length = static_cast<uint32_t>(rb);
      reqs_[k].dest = out + split_[k] * rb;
      req_ptrs_[k] = &reqs_[k];
    }
    (void)table.reader->ReadBatch(req_ptrs_);
    for (size_t k = 0; k < split_.size(); ++k) {
      if (reqs_[k].status.ok()) {
        cache_->Offer(layer, rows[split_[k]], out + split_[k] * rb);
      } else {
        if (status.ok()) status = reqs_[k].status;
        ++failures;
        SetRowFailed(split_[k], out, failed);
      }
    }
  }
  if (failures > 0) {
    spdlog::warn("nvme tier: layer {} table {}: {} of {} rows unreadable after retries: {}", layer,
                 table.name, failures, rows.size(), status.message());
  }
  return status;
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
                             t.file, t.name, t.shape);
    }
    const uint64_t expected =
        static_cast<uint64_t>(t.shape[0]) * static_cast<uint64_t>(t.shape[1]) * DTypeSize(t.dtype);
    if (t.nbytes != expected) {
      return InvalidArgument("nvme tier: {}: table {} holds {} bytes, expected {} ({} {})", t.file,
                             t.name, t.nbytes, expected, DTypeName(t.dtype), t.shape);
    }
    if (t.dtype != first.dtype || t.shape[1] != first.shape[1]) {
      return InvalidArgument(
          "nvme tier: {}: table {} is {} {}, but {} is {} {}; all Engram tables must share "
          "dtype and Dh",
          t.file, t.name, DTypeName(t.dtype), t.shape, first.name, DTypeName(first.dtype),
          first.shape);
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
  const uint64_t merge_bytes = std::min<uint64_t>(options.merge_bytes, ropts.max_request_bytes);
  return std::unique_ptr<TableTier>(
      std::make_unique<NvmeTier>(std::move(readers), std::move(out), std::move(cache), first.dtype,
                                 first.shape[1], merge_bytes, options.merge_buffer_bytes));
}

}  // namespace engram
