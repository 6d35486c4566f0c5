// QuantizeModelTables: `engram pack quantize --tables fp8`. Copies a model directory with its
// Engram tables (F32, F16 or BF16) re-stored as FP8 rows: E4M3 codes [rows, Dh] plus an E8M0
// scale per 32 values [rows, Dh / 32] in the tensor "<table>.scale" beside it (DESIGN.md, both
// layouts). Scales come from each block's largest magnitude (fp8.h: the smallest power of two
// that brings it to <= 448), values round to nearest even and saturate. Every other tensor and
// file is copied unchanged; the index's weight_map gains the scales; engram_checksums.json is
// written for the tables and their scales (plus whatever else the input's listed).
//
// Streaming: a shard holding tables is rewritten window by window (a few 64 MiB buffers, never a
// whole table), quantized on `threads` threads; the scales are a second pass over the table
// (shard_rewrite.h does the rest).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/shard_rewrite.h"

namespace engram {

struct QuantizeOptions {
  int threads = 0;       // 0: DefaultThreads
  bool progress = true;  // GB read and GB/s on stderr, at most once a second
};

struct QuantizeReport {
  int tables = 0;                // tables quantized
  uint64_t table_bytes_in = 0;   // their bytes before
  uint64_t table_bytes_out = 0;  // codes + scales after
  uint64_t copied_bytes = 0;     // other tensors and files copied
  double quantize_seconds = 0;   // writing the quantized shards
  double total_seconds = 0;      // everything, checksums included
};

// INVALID_ARGUMENT when `in` has no Engram tables, a table is already FP8 or of another dtype,
// or Dh is not a multiple of 32; FAILED_PRECONDITION when `out` is `in`; errors of the files
// name them.
Result<QuantizeReport> QuantizeModelTables(const std::string& in, const std::string& out,
                                           const QuantizeOptions& options);

// What QuantizeModelTables plans, for a caller that rewrites more in the same pass
// (weight_quantize.h): adds the rewrite of every Engram table of `config` (tensors of `store`)
// to plan->tensors and the tables with their scales to plan->checksums, and fills report->tables
// and the table byte counts. `in` names the model in errors, which are QuantizeModelTables'.
Status PlanTableQuantize(const std::string& in, const ModelConfig& config, const TensorStore& store,
                         int threads, ShardRewritePlan* plan, QuantizeReport* report);

}  // namespace engram
