// NvmeTier: Engram tables read in place from their safetensors files with io_uring and
// O_DIRECT (one IoUringReader per distinct file), behind a DRAM RowCache. ReadRows copies
// cached rows, reads the call's missed rows with the file's reader (row r of a table is at
// file_offset + r * row_bytes; an FP8 row's scales at their tensor's offset + r * Dh / 32), copies
// them to dst and offers them to the cache, whose policy decides what stays. Missed rows whose
// aligned blocks overlap or touch are read with one request of up to merge_bytes (no block is read
// that a row does not need; merged reads go through a buffer of merge_buffer_bytes, in waves); when
// such a merged read fails, its rows are read again one by one, so a bad block fails only the rows
// in it.
//
// Ownership: the tier owns its readers (fds, rings, bounce buffers) and the cache arena.
// Thread safety: as TableTier (ReadRows from one thread at a time, stats() from any).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/safetensors.h"
#include "tiering/host_memory.h"
#include "tiering/io_uring_reader.h"
#include "tiering/table_source.h"
#include "tiering/table_tier.h"

namespace engram {

struct NvmeTierOptions {
  uint64_t cache_bytes = 0;        // DRAM row cache; 0 = no cache (every row is read)
  std::string policy = "tinylfu";  // row cache policy: "tinylfu" | "lru" (cache_policy.h)
  PageRequest cache_page = PageRequest::kTransparentHuge;
  // Largest merged read of neighbouring rows; 0 = one read per row. Clamped to the reader's
  // max_request_bytes.
  uint32_t merge_bytes = 128 << 10;
  // The buffer merged reads land in (at least merge_bytes); a call's merged reads are issued in
  // waves that fit it. The default holds 32 merges of 128 KiB, the reader's queue depth.
  uint64_t merge_buffer_bytes = 4 << 20;
  // Per-file reader options: queue_depth, max_retries, allow_buffered (filesystems without
  // O_DIRECT), fault_hook (tests). max_request_bytes is raised to a row when smaller.
  ReaderOptions reader;
};

// tables[l] is Engram layer l's table as TensorStore::Info reports it ([rows, Dh], one
// dtype and Dh for all), with its scales for an F8_E4M3 table: a stored row is read as its
// weight bytes and its scale bytes (two reads, submitted together when both tensors are in one
// file, each merged with its neighbours like any row; rows need not be aligned to blocks),
// and cached packed. FAILED_PRECONDITION for a tensor
// without a file (in memory); INVALID_ARGUMENT for a bad shape, dtype or scales
// (CheckTableShapes) or a byte size that is not shape x dtype; OUT_OF_RANGE when a tensor runs
// past its file's end; the reader's status when a file cannot be opened.
Result<std::unique_ptr<TableTier>> CreateNvmeTier(const std::vector<TableFiles>& tables,
                                                  const NvmeTierOptions& options);

}  // namespace engram
