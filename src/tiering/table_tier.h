// TableTier: where one model's Engram tables live (host DRAM or NVMe), seen by the prefetch
// copy engine as "copy these rows of layer l's table to dst". Implementations: the host tier
// (host_tier.h, tables copied into NUMA-placed DRAM) and the NVMe tier (nvme_tier.h, rows read
// in place from the safetensors files through io_uring, with a DRAM row cache).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/dtype.h"
#include "common/row_format.h"
#include "common/status.h"
#include "kernels/tensor.h"

namespace engram {

struct TierStats {  // cumulative; read with stats()
  uint64_t rows_requested = 0, bytes_moved = 0;
  uint64_t cache_hits = 0, cache_misses = 0;  // DRAM row cache (NVMe tier); 0 for others
  uint64_t io_reads = 0, io_retries = 0;      // NVMe reads
  double read_seconds = 0;                    // time spent inside ReadRows
  double cache_hit_rate() const {             // of the DRAM row cache's lookups; 0 without any
    const uint64_t lookups = cache_hits + cache_misses;
    return lookups > 0 ? static_cast<double>(cache_hits) / static_cast<double>(lookups) : 0.0;
  }
};

// Where one model's Engram tables live. ReadRows is called from one copy thread at a time
// (not thread-safe across concurrent calls); stats() may be called from any thread.
class TableTier {
 public:
  virtual ~TableTier() = default;
  virtual std::string_view name() const = 0;  // "dram", "nvme"
  virtual int num_layers() const = 0;
  // How rows are stored (F32/F16/BF16, or packed FP8 with scales) and Dh.
  virtual RowFormat format() const = 0;
  virtual int64_t rows(int layer) const = 0;
  // Copies the given rows (absolute row numbers of layer `layer`'s table; the caller has
  // deduplicated them) to dst, one after another in their stored form (rows.size() *
  // row_bytes() bytes). OUT_OF_RANGE for a row outside the table (nothing is copied). UNAVAILABLE
  // for an I/O failure after retries, naming file, offset and cause; then, when `failed` is not
  // empty (rows.size() flags), failed[i] is set to 1 for each row that could not be read, whose
  // bytes in dst are zero, and every other row was copied (so one bad block fails only the requests
  // that need it).
  virtual Status ReadRows(int layer, std::span<const int64_t> rows, void* dst,
                          std::span<uint8_t> failed) = 0;
  // Layer `layer`'s whole table as a host tensor [rows, format().cols()] of
  // format().storage_dtype() when the tier holds it in memory
  // (the DRAM tier: a zero-copy transfer can read it in place); an empty tensor otherwise.
  virtual Tensor HostTable(int /*layer*/) const { return Tensor(); }
  // Whether every host table is pinned (registered for DMA through the backend).
  virtual bool pinned() const { return false; }
  virtual TierStats stats() const = 0;
  virtual int64_t resident_bytes() const = 0;  // DRAM used by this tier

  // Bytes of one stored row (scales included).
  size_t row_bytes() const { return format().bytes(); }
};

}  // namespace engram
