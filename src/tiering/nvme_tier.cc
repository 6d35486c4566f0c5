#include "tiering/nvme_tier.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>

#include <fmt/ranges.h>

#include "common/logging.h"
#include "tiering/row_cache.h"

namespace engram {
namespace {

// Where one stored row's bytes come from: a table's weights, or an FP8 table's scales (their
// own tensor, possibly in another file). A stored row is the concatenation of its parts.
struct Part {
  IoUringReader* reader = nullptr;
  uint64_t file_offset = 0;  // of the part's row 0
  size_t bytes = 0;          // per row
  size_t row_offset = 0;     // where the part starts in the stored row
};

struct Table {
  std::string name;
  int64_t rows = 0;
  std::vector<Part> parts;  // weights, then scales (FP8)
};

class NvmeTier final : public TableTier {
 public:
  NvmeTier(std::vector<std::unique_ptr<IoUringReader>> readers, std::vector<Table> tables,
           std::unique_ptr<RowCache> cache, RowFormat format, uint64_t merge_bytes,
           uint64_t merge_buffer_bytes)
      : readers_(std::move(readers)),
        tables_(std::move(tables)),
        cache_(std::move(cache)),
        format_(format),
        merge_bytes_(merge_bytes),
        merge_buffer_bytes_(merge_buffer_bytes) {}
  std::string_view name() const override { return "nvme"; }
  int num_layers() const override { return static_cast<int>(tables_.size()); }
  RowFormat format() const override { return format_; }
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
    const Part* part = nullptr;
    size_t first = 0, last = 0;
    uint64_t begin = 0, end = 0;
    size_t buf_offset = 0;
  };
  // Reads the rows at miss_pos_ into out (+ i * row_bytes), part by part, then offers each
  // row read whole to the cache; failed rows are zeroed and flagged. Returns the first
  // failure's status.
  Status ReadMisses(int layer, std::span<const int64_t> rows, std::byte* out,
                    std::span<uint8_t> failed);
  // Parts (of one reader) of every missed row, their reads submitted together (an FP8 row's
  // codes and scales in one round trip); sets row_failed_[i] for rows it could not read.
  Status ReadParts(IoUringReader& reader, std::span<const int64_t> rows, std::byte* out,
                   uint64_t* failures);

  std::vector<std::unique_ptr<IoUringReader>> readers_;
  std::vector<Table> tables_;
  std::unique_ptr<RowCache> cache_;
  RowFormat format_;
  uint64_t merge_bytes_;
  uint64_t merge_buffer_bytes_;
  // Per-call scratch, reused.
  std::vector<ReadRequest> reqs_;
  std::vector<ReadRequest*> req_ptrs_;
  std::vector<size_t> miss_pos_;
  std::vector<Run> runs_;
  std::vector<std::byte> merge_buf_;                   // merged reads of one wave
  std::vector<std::pair<size_t, const Part*>> split_;  // rows of failed merged reads, read
                                                       // again one by one
  std::vector<const Part*> parts_;                     // of the reader being read
  std::vector<uint8_t> row_failed_;                    // per row of the call
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
    std::vector<std::pair<IoUringReader*, ReaderStats>> before;
    for (const Part& p : table.parts) {
      if (before.empty() || before.back().first != p.reader) {
        before.emplace_back(p.reader, p.reader->stats());
      }
    }
    status = ReadMisses(layer, rows, out, failed);
    for (const auto& [reader, b] : before) {
      const ReaderStats& after = reader->stats();
      io_reads += after.reads_submitted - b.reads_submitted;
      io_retries += after.retries - b.retries;
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

Status NvmeTier::ReadMisses(int layer, std::span<const int64_t> rows, std::byte* out,
                            std::span<uint8_t> failed) {
  const Table& table = tables_[static_cast<size_t>(layer)];
  const size_t rb = row_bytes();
  // File order (of every part: a part's row r is at file_offset + r * bytes).
  std::sort(miss_pos_.begin(), miss_pos_.end(),
            [&](size_t a, size_t b) { return rows[a] < rows[b]; });
  row_failed_.assign(rows.size(), 0);
  Status status;  // the first row failure that stands
  uint64_t failures = 0;
  for (size_t p = 0; p < table.parts.size(); ++p) {
    IoUringReader* reader = table.parts[p].reader;
    bool seen = false;  // a reader's parts are read together, once
    for (size_t q = 0; q < p; ++q) seen |= table.parts[q].reader == reader;
    if (seen) continue;
    parts_.clear();
    for (const Part& part : table.parts) {
      if (part.reader == reader) parts_.push_back(&part);
    }
    Status st = ReadParts(*reader, rows, out, &failures);
    if (status.ok() && !st.ok()) status = st;
  }
  for (const size_t i : miss_pos_) {
    if (row_failed_[i]) {
      std::memset(out + i * rb, 0, rb);  // never hand out a partial row
      if (!failed.empty()) failed[i] = 1;
    } else {
      cache_->Offer(layer, rows[i], out + i * rb);
    }
  }
  if (failures > 0) {
    spdlog::warn("nvme tier: layer {} table {}: {} of {} rows unreadable after retries: {}", layer,
                 table.name, failures, rows.size(), status.message());
  }
  return status;
}

Status NvmeTier::ReadParts(IoUringReader& reader, std::span<const int64_t> rows, std::byte* out,
                           uint64_t* failures) {
  const size_t rb = row_bytes();
  const uint64_t align = reader.alignment();
  auto part_offset = [&](const Part& part, size_t i) {
    return part.file_offset + static_cast<uint64_t>(rows[i]) * part.bytes;
  };
  auto dest = [&](const Part& part, size_t i) { return out + i * rb + part.row_offset; };
  auto fail = [&](size_t i, const Status& st, Status& first) {
    if (first.ok()) first = st;
    if (!row_failed_[i]) ++*failures;
    row_failed_[i] = 1;
  };
  // Per part, runs of rows whose aligned blocks overlap or touch (miss_pos_ is in file order).
  runs_.clear();
  for (const Part* part : parts_) {
    const size_t first_run = runs_.size();
    for (size_t k = 0; k < miss_pos_.size(); ++k) {
      const uint64_t begin = part_offset(*part, miss_pos_[k]);
      const uint64_t end = begin + part->bytes;
      if (runs_.size() > first_run) {
        Run& run = runs_.back();
        const bool touches = begin / align * align <= (run.end + align - 1) / align * align;
        if (touches && end - run.begin <= merge_bytes_) {
          run.end = std::max(run.end, end);
          run.last = k + 1;
          continue;
        }
      }
      runs_.push_back({part, k, k + 1, begin, end, 0});
    }
  }

  Status status;
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
      req.dest = run.last - run.first > 1
                     ? static_cast<void*>(merge_buf_.data() + run.buf_offset)
                     : static_cast<void*>(dest(*run.part, miss_pos_[run.first]));
      req_ptrs_[j] = &req;
    }
    (void)reader.ReadBatch(req_ptrs_);  // each request says how it ended
    for (size_t j = 0; j < w_end - w; ++j) {
      const Run& run = runs_[w + j];
      const bool merged = run.last - run.first > 1;
      if (!reqs_[j].status.ok()) {
        if (merged) {
          for (size_t k = run.first; k < run.last; ++k) split_.emplace_back(miss_pos_[k], run.part);
        } else {
          fail(miss_pos_[run.first], reqs_[j].status, status);
        }
        continue;
      }
      if (!merged) continue;
      for (size_t k = run.first; k < run.last; ++k) {
        const size_t i = miss_pos_[k];
        std::memcpy(dest(*run.part, i),
                    merge_buf_.data() + run.buf_offset + (part_offset(*run.part, i) - run.begin),
                    run.part->bytes);
      }
    }
    w = w_end;
  }
  if (!split_.empty()) {  // a merged read failed: find the rows that really cannot be read
    reqs_.assign(split_.size(), ReadRequest{});
    req_ptrs_.resize(split_.size());
    for (size_t k = 0; k < split_.size(); ++k) {
      const auto& [i, part] = split_[k];
      reqs_[k].offset = part_offset(*part, i);
      reqs_[k].length = static_cast<uint32_t>(part->bytes);
      reqs_[k].dest = dest(*part, i);
      req_ptrs_[k] = &reqs_[k];
    }
    (void)reader.ReadBatch(req_ptrs_);
    for (size_t k = 0; k < split_.size(); ++k) {
      if (!reqs_[k].status.ok()) fail(split_[k].first, reqs_[k].status, status);
    }
  }
  return status;
}

}  // namespace

namespace {

// A tensor the tier reads in place: it must lie in a file, hold shape x dtype bytes and end
// within its file.
Status CheckInFile(const TensorInfo& t, const char* what) {
  if (t.file.empty()) {
    return FailedPrecondition(
        "nvme tier: {} {} is in memory, not in a file; the NVMe tier reads tables in place "
        "from their files; write the model to disk with engram pack synth",
        what, t.name);
  }
  uint64_t expected = DTypeSize(t.dtype);
  for (const int64_t d : t.shape) expected *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
  if (t.nbytes != expected) {
    return InvalidArgument("nvme tier: {}: {} {} holds {} bytes, expected {} ({} {})", t.file, what,
                           t.name, t.nbytes, expected, DTypeName(t.dtype), t.shape);
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<TableTier>> CreateNvmeTier(const std::vector<TableFiles>& tables,
                                                  const NvmeTierOptions& options) {
  if (tables.empty()) return InvalidArgument("nvme tier: no Engram tables");
  const TableFiles& first = tables[0];
  for (const TableFiles& t : tables) {
    ENGRAM_RETURN_IF_ERROR(CheckInFile(t.weight, "table"));
    std::optional<std::pair<DType, std::vector<int64_t>>> scale;
    if (t.scale) {
      ENGRAM_RETURN_IF_ERROR(CheckInFile(*t.scale, "scales"));
      scale.emplace(t.scale->dtype, t.scale->shape);
    }
    ENGRAM_RETURN_IF_ERROR(CheckTableShapes(t.weight.name, t.weight.dtype, t.weight.shape,
                                            t.scale ? t.scale->name : t.weight.name + " scales",
                                            scale)
                               .WithContext("nvme tier: " + t.weight.file));
    if (t.weight.dtype != first.weight.dtype || t.weight.shape[1] != first.weight.shape[1]) {
      return InvalidArgument(
          "nvme tier: {}: table {} is {} {}, but {} is {} {}; all Engram tables must share "
          "dtype and Dh",
          t.weight.file, t.weight.name, DTypeName(t.weight.dtype), t.weight.shape,
          first.weight.name, DTypeName(first.weight.dtype), first.weight.shape);
    }
  }
  const RowFormat format = first.format();
  const size_t rb = format.bytes();
  ReaderOptions ropts = options.reader;
  ropts.max_request_bytes = std::max<uint32_t>(ropts.max_request_bytes, static_cast<uint32_t>(rb));

  std::vector<std::unique_ptr<IoUringReader>> readers;
  std::map<std::string, IoUringReader*> by_file;
  auto reader_of = [&](const TensorInfo& t) -> Result<IoUringReader*> {
    IoUringReader*& reader = by_file[t.file];
    if (reader == nullptr) {
      auto r = IoUringReader::Open(t.file, ropts);
      if (!r.ok()) return r.status().WithContext("nvme tier: tensor " + t.name);
      if (!(*r)->direct_io()) {
        spdlog::warn("nvme tier: {} is read with buffered I/O (no O_DIRECT)", t.file);
      }
      readers.push_back(std::move(r).value());
      reader = readers.back().get();
    }
    if (t.file_offset + t.nbytes > reader->file_size()) {
      return OutOfRange(
          "nvme tier: {}: tensor {} [{}, {}) runs past the end of the file ({} bytes)", t.file,
          t.name, t.file_offset, t.file_offset + t.nbytes, reader->file_size());
    }
    return reader;
  };
  std::vector<Table> out;
  for (const TableFiles& t : tables) {
    Table table;
    table.name = t.weight.name;
    table.rows = t.weight.shape[0];
    const size_t weight_bytes = static_cast<size_t>(t.weight.shape[1]) * DTypeSize(t.weight.dtype);
    ENGRAM_ASSIGN_OR_RETURN(IoUringReader * wr, reader_of(t.weight));
    table.parts.push_back({wr, t.weight.file_offset, weight_bytes, 0});
    if (t.scale) {
      ENGRAM_ASSIGN_OR_RETURN(IoUringReader * sr, reader_of(*t.scale));
      table.parts.push_back({sr, t.scale->file_offset, rb - weight_bytes, weight_bytes});
    }
    out.push_back(std::move(table));
  }
  ENGRAM_ASSIGN_OR_RETURN(
      auto cache, RowCache::Create(rb, options.cache_bytes, options.policy, options.cache_page));
  spdlog::info("nvme tier: {} Engram tables in {} file(s), {} B {} rows, row cache {} slots ({})",
               tables.size(), readers.size(), rb, DTypeName(format.dtype), cache->capacity(),
               cache->policy().name());
  const uint64_t merge_bytes = std::min<uint64_t>(options.merge_bytes, ropts.max_request_bytes);
  return std::unique_ptr<TableTier>(
      std::make_unique<NvmeTier>(std::move(readers), std::move(out), std::move(cache), format,
                                 merge_bytes, options.merge_buffer_bytes));
}

}  // namespace engram
