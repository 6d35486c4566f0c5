// HostTier: every Engram table copied whole into host DRAM (AllocateHost: NUMA policy, huge
// pages, pre-faulted, optionally pinned for DMA); ReadRows is a memcpy per row. The tables
// (TableSource: host tensors [rows, Dh], e.g. views of mmapped safetensors files or synthetic
// in-memory tensors, with their scales for FP8) are only read while creating the tier; it keeps
// its own copy in the stored row form (FP8 rows packed: codes then scales, row_format.h).
//
// Ownership: the tier owns one allocation per table. Thread safety: as TableTier (ReadRows
// from one thread at a time, stats() from any).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/tensor.h"
#include "model/safetensors.h"
#include "tiering/host_memory.h"
#include "tiering/table_source.h"
#include "tiering/table_tier.h"

namespace engram {

struct HostTierOptions {
  PageRequest page = PageRequest::kHugetlb2M;  // falls back to THP, then normal pages
  NumaPolicy numa = NumaPolicy::kNone;
  int node = 0;                       // kBind: OS node index
  std::vector<int> interleave_nodes;  // kInterleave: OS node indices; empty = all allowed
  bool populate = true;               // pre-fault the tables' pages where the policy says
  int populate_threads = 0;           // 0 = min(hardware threads, 8)
  // Optional pinning of each table's allocation (e.g. cudaHostRegister) and its undo.
  std::function<Status(void*, size_t)> register_for_dma;
  std::function<void(void*, size_t)> unregister_for_dma;
  // DRAM the tiers may use for tables; 0 = unlimited. RESOURCE_EXHAUSTED when the tables'
  // total exceeds it.
  uint64_t budget_bytes = 0;
  int copy_threads = 0;  // threads copying the tables in; 0 = min(hardware threads, 8)
  // Optional: told the bytes copied so far and the total each time the copy passes a whole
  // percent, in increasing order, one call at a time (from the copy threads).
  std::function<void(uint64_t done, uint64_t total)> on_progress;
  // Optional, parallel to `tables`: where each table came from (TensorStore::Info). Names the
  // tables in messages, and the recorded byte size, dtype and shape are checked against the
  // tensor (INVALID_ARGUMENT naming the tensor on a mismatch).
  std::vector<TensorInfo> infos;
};

// tables[l] is Engram layer l's table; all tables share dtype and Dh.
// INVALID_ARGUMENT (naming the table) for a non-CPU, non-2-D, empty or mismatched table, or
// FP8 weights without matching scales (TableSource::Check); RESOURCE_EXHAUSTED naming the
// tiers' budget (counted in stored bytes, scales included), or from AllocateHost.
Result<std::unique_ptr<TableTier>> CreateHostTier(const std::vector<TableSource>& tables,
                                                  const HostTierOptions& options);

}  // namespace engram
