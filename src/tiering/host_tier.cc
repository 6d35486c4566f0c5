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
  HostTier(std::vector<HostAllocation> allocs, std::vector<int64_t> rows, DType dtype, int64_t dh)
      : allocs_(std::move(allocs)), rows_(std::move(rows)), dtype_(dtype), dh_(dh) {
    for (const auto& a : allocs_) resident_ += static_cast<int64_t>(a.info().mapped_bytes);
  }
  std::string_view name() const override { return "dram"; }
  int num_layers() const override { return static_cast<int>(allocs_.size()); }
  DType dtype() const override { return dtype_; }
  int64_t row_elems() const override { return dh_; }
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
    return HostView(allocs_[layer].data(), dtype_, {rows_[layer], dh_});
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
  DType dtype_;
  int64_t dh_;
  int64_t resident_ = 0;
  mutable std::mutex stats_mu_;
  TierStats stats_;  // GUARDED_BY(stats_mu_)
};

std::string TableName(const HostTierOptions& options, size_t i) {
  if (i < options.infos.size() && !options.infos[i].name.empty()) return options.infos[i].name;
  return "engram table layer " + std::to_string(i);
}

Status CheckTables(const std::vector<Tensor>& tables, const HostTierOptions& options) {
  if (tables.empty()) return InvalidArgument("dram tier: no Engram tables");
  if (!options.infos.empty() && options.infos.size() != tables.size()) {
    return InvalidArgument("dram tier: {} table infos for {} tables", options.infos.size(),
                           tables.size());
  }
  for (size_t i = 0; i < tables.size(); ++i) {
    const Tensor& t = tables[i];
    const std::string name = TableName(options, i);
    if (t.device != Device::kCpu || t.data == nullptr) {
      return InvalidArgument("dram tier: table {} is not in host memory", name);
    }
    if (t.shape.size() != 2 || t.shape[0] <= 0 || t.shape[1] <= 0) {
      return InvalidArgument("dram tier: table {} has shape {}, expected [rows > 0, Dh > 0]", name,
                             t.ShapeString());
    }
    if (t.dtype != tables[0].dtype || t.shape[1] != tables[0].shape[1]) {
      return InvalidArgument(
          "dram tier: table {} is {} {}, but the first table is {} with Dh {}; all Engram "
          "tables must share dtype and Dh",
          name, DTypeName(t.dtype), t.ShapeString(), DTypeName(tables[0].dtype),
          tables[0].shape[1]);
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

// Copies every table into its allocation with `threads` threads taking 64 MiB chunks, logging
// progress every ~10% when the total is large.
void CopyTables(const std::vector<Tensor>& tables, std::vector<HostAllocation>& allocs,
                int threads) {
  struct Chunk {
    size_t table;
    size_t offset, bytes;
  };
  std::vector<Chunk> chunks;
  uint64_t total = 0;
  for (size_t i = 0; i < tables.size(); ++i) {
    const size_t n = tables[i].nbytes();
    for (size_t off = 0; off < n; off += kCopyChunkBytes) {
      chunks.push_back({i, off, std::min(kCopyChunkBytes, n - off)});
    }
    total += n;
  }
  std::atomic<uint64_t> done{0};
  const bool log = total >= kProgressLogBytes;
  const auto start = std::chrono::steady_clock::now();
  (void)ParallelFor(chunks.size(), threads, [&](size_t c) {
    const Chunk& ch = chunks[c];
    std::memcpy(static_cast<std::byte*>(allocs[ch.table].data()) + ch.offset,
                static_cast<const std::byte*>(tables[ch.table].data) + ch.offset, ch.bytes);
    const uint64_t before = done.fetch_add(ch.bytes);
    const uint64_t after = before + ch.bytes;
    if (log && before * 10 / total != after * 10 / total) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      spdlog::info("dram tier: copied {:.1f} of {:.1f} GiB of Engram tables ({}%, {:.1f}s)",
                   after / double(1 << 30), total / double(1 << 30), after * 100 / total, secs);
    }
    return Status::Ok();
  });
}

}  // namespace

Result<std::unique_ptr<TableTier>> CreateHostTier(const std::vector<Tensor>& tables,
                                                  const HostTierOptions& options) {
  ENGRAM_RETURN_IF_ERROR(CheckTables(tables, options));
  uint64_t total = 0;
  for (const Tensor& t : tables) total += t.nbytes();
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
    a.bytes = tables[i].nbytes();
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
    rows.push_back(tables[i].shape[0]);
  }
  const int threads = DefaultThreads(options.copy_threads);
  const auto start = std::chrono::steady_clock::now();
  CopyTables(tables, allocs, threads);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info(
      "dram tier: {} Engram tables, {:.2f} GiB copied in {:.2f}s with {} thread(s); "
      "layer 0: {}",
      tables.size(), total / double(1 << 30), secs, threads, allocs[0].info().Summary());
  return std::unique_ptr<TableTier>(std::make_unique<HostTier>(
      std::move(allocs), std::move(rows), tables[0].dtype, tables[0].shape[1]));
}

}  // namespace engram
