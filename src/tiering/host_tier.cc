#include "tiering/host_tier.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>

#include <fmt/ranges.h>

#include "common/logging.h"
#include "common/parallel.h"

namespace engram {
namespace {

// Tables at least this big (in total) log their copy progress every ~10%.
constexpr uint64_t kProgressLogBytes = uint64_t{256} << 20;
constexpr size_t kCopyChunkBytes = size_t{64} << 20;

class HostTier final : public TableTier {
 public:
  HostTier(std::vector<HostAllocation> allocs, std::vector<int64_t> rows, RowFormat format)
      : allocs_(std::move(allocs)), rows_(std::move(rows)), format_(format) {
    for (const auto& a : allocs_) resident_ += static_cast<int64_t>(a.info().mapped_bytes);
  }
  std::string_view name() const override { return "dram"; }
  int num_layers() const override { return static_cast<int>(allocs_.size()); }
  RowFormat format() const override { return format_; }
  int64_t rows(int layer) const override { return rows_.at(layer); }
  int64_t resident_bytes() const override { return resident_; }
  TierStats stats() const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

  bool pinned() const override {
    for (const auto& a : allocs_) {
      if (!a.info().pinned) return false;
    }
    return true;
  }
  Tensor HostTable(int layer) const override {
    if (layer < 0 || layer >= num_layers()) return Tensor();
    return HostView(allocs_[layer].data(), format_.storage_dtype(), {rows_[layer], format_.cols()});
  }

  Status ReadRows(int layer, std::span<const int64_t> rows, void* dst,
                  std::span<uint8_t> /*failed: memory reads do not fail*/) override {
    const auto start = std::chrono::steady_clock::now();
    if (layer < 0 || layer >= num_layers()) {
      return OutOfRange("dram tier: layer {} outside [0, {})", layer, num_layers());
    }
    const int64_t n = rows_[layer];
    for (const int64_t r : rows) {
      if (r < 0 || r >= n) {
        return OutOfRange("dram tier: row {} outside layer {}'s table of {} rows", r, layer, n);
      }
    }
    const size_t rb = row_bytes();
    const auto* base = static_cast<const std::byte*>(allocs_[layer].data());
    auto* out = static_cast<std::byte*>(dst);
    constexpr size_t kAhead = 8;  // rows prefetched ahead of the copy
    for (size_t i = 0; i < rows.size() && i < kAhead; ++i) {
      __builtin_prefetch(base + static_cast<size_t>(rows[i]) * rb);
    }
    for (size_t i = 0; i < rows.size(); ++i) {
      if (i + kAhead < rows.size()) {
        const std::byte* p = base + static_cast<size_t>(rows[i + kAhead]) * rb;
        for (size_t off = 0; off < rb; off += 64) __builtin_prefetch(p + off);
      }
      std::memcpy(out + i * rb, base + static_cast<size_t>(rows[i]) * rb, rb);
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.rows_requested += rows.size();
    stats_.bytes_moved += rows.size() * rb;
    stats_.read_seconds += secs;
    return Status::Ok();
  }

 private:
  std::vector<HostAllocation> allocs_;
  std::vector<int64_t> rows_;
  RowFormat format_;
  int64_t resident_ = 0;
  mutable std::mutex stats_mu_;
  TierStats stats_;  // GUARDED_BY(stats_mu_)
};

std::string TableName(const HostTierOptions& options, size_t i) {
  if (i < options.infos.size() && !options.infos[i].name.empty()) return options.infos[i].name;
  return "engram table layer " + std::to_string(i);
}

Status CheckTables(const std::vector<TableSource>& tables, const HostTierOptions& options) {
  if (tables.empty()) return InvalidArgument("dram tier: no Engram tables");
  if (!options.infos.empty() && options.infos.size() != tables.size()) {
    return InvalidArgument("dram tier: {} table infos for {} tables", options.infos.size(),
                           tables.size());
  }
  const RowFormat first = tables[0].format();
  for (size_t i = 0; i < tables.size(); ++i) {
    const TableSource& src = tables[i];
    const Tensor& t = src.weight;
    const std::string name = TableName(options, i);
    if (Status st = src.Check(name); !st.ok()) return st.WithContext("dram tier");
    if (t.dtype != first.dtype || t.shape[1] != first.dim) {
      return InvalidArgument(
          "dram tier: table {} is {} {}, but the first table is {} with Dh {}; all Engram "
          "tables must share dtype and Dh",
          name, DTypeName(t.dtype), t.ShapeString(), DTypeName(first.dtype), first.dim);
    }
    if (i < options.infos.size()) {
      const TensorInfo& info = options.infos[i];
      const std::string where = info.file.empty() ? "" : info.file + ": ";
      if (info.dtype != t.dtype || info.shape != t.shape) {
        return InvalidArgument(
            "dram tier: {}tensor {} is recorded as {} {}, but the table is {} {}", where, name,
            DTypeName(info.dtype), info.shape, DTypeName(t.dtype), t.ShapeString());
      }
      if (info.nbytes != t.nbytes()) {
        return InvalidArgument(
            "dram tier: {}tensor {} holds {} bytes, expected {} ({} x {} for shape {})", where,
            name, info.nbytes, t.nbytes(), t.numel(), DTypeName(t.dtype), t.ShapeString());
      }
    }
  }
  return Status::Ok();
}

// Copies every table into its allocation in the stored row form with `threads` threads taking
// chunks of rows (at most 64 MiB and about 1/128 of the total, so that progress moves by
// percents), logging progress every ~10% when the total is large and telling `on_progress`
// (when set) at each percent.
void CopyTables(const std::vector<TableSource>& tables, std::vector<HostAllocation>& allocs,
                int threads, const std::function<void(uint64_t, uint64_t)>& on_progress) {
  struct Chunk {
    size_t table;
    int64_t begin, end;  // rows
    size_t bytes;
  };
  std::vector<Chunk> chunks;
  uint64_t total = 0;
  for (const TableSource& t : tables) total += static_cast<uint64_t>(t.rows()) * t.format().bytes();
  const uint64_t chunk_bytes = std::min<uint64_t>(kCopyChunkBytes, total / 128);
  for (size_t i = 0; i < tables.size(); ++i) {
    const size_t rb = tables[i].format().bytes();
    const int64_t rows = tables[i].rows();
    const int64_t step = std::max<int64_t>(1, static_cast<int64_t>(chunk_bytes / rb));
    for (int64_t r = 0; r < rows; r += step) {
      const int64_t end = std::min(rows, r + step);
      chunks.push_back({i, r, end, static_cast<size_t>(end - r) * rb});
    }
  }
  std::atomic<uint64_t> done{0};
  std::mutex progress_mu;
  uint64_t reported_percent = 0;  // GUARDED_BY(progress_mu)
  const bool log = total >= kProgressLogBytes;
  const auto start = std::chrono::steady_clock::now();
  (void)ParallelFor(chunks.size(), threads, [&](size_t c) {
    const Chunk& ch = chunks[c];
    const size_t rb = tables[ch.table].format().bytes();
    tables[ch.table].CopyRows(
        ch.begin, ch.end,
        static_cast<std::byte*>(allocs[ch.table].data()) + static_cast<size_t>(ch.begin) * rb);
    const uint64_t before = done.fetch_add(ch.bytes);
    const uint64_t after = before + ch.bytes;
    if (log && before * 10 / total != after * 10 / total) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      spdlog::info("dram tier: copied {:.1f} of {:.1f} GiB of Engram tables ({}%, {:.1f}s)",
                   after / double(1 << 30), total / double(1 << 30), after * 100 / total, secs);
    }
    if (on_progress) {
      // Chunks finish out of order: only a percent above the last one reported is told.
      std::lock_guard<std::mutex> lock(progress_mu);
      if (after * 100 / total > reported_percent) {
        reported_percent = after * 100 / total;
        on_progress(after, total);
      }
    }
    return Status::Ok();
  });
}

}  // namespace

Result<std::unique_ptr<TableTier>> CreateHostTier(const std::vector<TableSource>& tables,
                                                  const HostTierOptions& options) {
  ENGRAM_RETURN_IF_ERROR(CheckTables(tables, options));
  const RowFormat format = tables[0].format();
  uint64_t total = 0;
  for (const TableSource& t : tables) total += static_cast<uint64_t>(t.rows()) * format.bytes();
  if (options.budget_bytes > 0 && total > options.budget_bytes) {
    return ResourceExhausted(
        "dram tier: the {} Engram tables need {} bytes ({:.2f} GiB), more than the tiers' "
        "budget of {} bytes ({:.2f} GiB); raise the budget or use the NVMe tier",
        tables.size(), total, total / double(1 << 30), options.budget_bytes,
        options.budget_bytes / double(1 << 30));
  }
  std::vector<HostAllocation> allocs;
  std::vector<int64_t> rows;
  for (size_t i = 0; i < tables.size(); ++i) {
    HostAllocOptions a;
    a.bytes = static_cast<size_t>(tables[i].rows()) * format.bytes();
    a.page = options.page;
    a.policy = options.numa;
    a.node = options.node;
    a.interleave_nodes = options.interleave_nodes;
    a.populate = options.populate;
    a.populate_threads = options.populate_threads;
    a.register_for_dma = options.register_for_dma;
    a.unregister_for_dma = options.unregister_for_dma;
    a.label = TableName(options, i);
    auto alloc = AllocateHost(a);
    if (!alloc.ok()) return alloc.status().WithContext("dram tier: table " + a.label);
    allocs.push_back(std::move(alloc).value());
    rows.push_back(tables[i].rows());
  }
  const int threads = DefaultThreads(options.copy_threads);
  const auto start = std::chrono::steady_clock::now();
  CopyTables(tables, allocs, threads, options.on_progress);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info(
      "dram tier: {} Engram tables of {} B {} rows, {:.2f} GiB copied in {:.2f}s with {} "
      "thread(s); layer 0: {}",
      tables.size(), format.bytes(), DTypeName(format.dtype), total / double(1 << 30), secs,
      threads, allocs[0].info().Summary());
  return std::unique_ptr<TableTier>(
      std::make_unique<HostTier>(std::move(allocs), std::move(rows), format));
}

}  // namespace engram
