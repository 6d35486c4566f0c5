// RewriteModel: copies a model directory into a new one with some tensors re-stored, the engine
// of `engram pack quantize` (table_quantize.h, weight_quantize.h).
//
// - Every shard holding a tensor of the plan is rewritten, tensors in file order: a planned
//   tensor is replaced by its outputs (e.g. codes under the same name, then their scales), the
//   others are copied byte for byte. Shards without one are copied whole. Shard file names are
//   kept.
// - Every other regular file (tokenizer, compression map, ...) is copied, config.json too unless
//   the plan gives its new text. The old index and checksums are not copied but rewritten:
// - model.safetensors.index.json (when the input has one or more than one shard): the weight_map
//   of every output tensor.
// - engram_checksums.json, when the input has one or the plan names tensors to list: the
//   tensors the input listed (a rewritten one with all its outputs) and the plan's. Copied
//   tensors keep the input's checksum (same bytes, same chunk_bytes); rewritten ones are
//   hashed from the new files.
//
// Memory: two window buffers of the rewriters' choosing; copied tensors stream from the mapping.
// Thread safety: one call at a time per output directory; the rewriters run on the caller's
// thread (they may start their own), the previous window is written on a thread of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/tensor.h"
#include "model/safetensors.h"

namespace engram {

// The input bytes a rewriter should turn into one window (two such windows are in flight).
inline constexpr size_t kRewriteWindowBytes = size_t{64} << 20;

// Where a rewritten tensor's bytes go, window by window: fill Next() with the next bytes of the
// outputs (in TensorRewrite::outputs order; a window may cross from one output into the next),
// then Submit(). Next() is never the buffer still being written.
class WindowSink {
 public:
  virtual ~WindowSink() = default;
  virtual std::vector<uint8_t>& Next() = 0;
  // Queues Next() for writing and flips the buffers; `source_bytes` of the input tensor were
  // consumed to make it (the progress line counts them).
  virtual Status Submit(uint64_t source_bytes) = 0;
};

// How one input tensor is re-stored.
struct TensorRewrite {
  std::vector<SafetensorsWriter::Spec> outputs;  // written in its place, in this order
  // Streams exactly the outputs' bytes, made from `src` (a view of the input tensor).
  std::function<Status(const Tensor& src, WindowSink& sink)> write;
};

struct ShardRewritePlan {
  std::map<std::string, TensorRewrite> tensors;  // input tensor name -> its rewrite
  std::optional<std::string> config_json;        // the new config.json text (else a copy)
  std::vector<std::string> checksums;            // output tensors engram_checksums.json lists
  int threads = 0;                               // hashing threads (0: DefaultThreads)
  bool progress = true;          // "<what>: X / Y GB read, Z GB/s" on stderr, at most once a second
  std::string what = "tensors";  // what the progress line says was read
};

struct ShardRewriteReport {
  uint64_t rewritten_bytes_in = 0;  // the planned tensors' input bytes
  uint64_t copied_bytes = 0;        // whole shards and other files copied
  double rewrite_seconds = 0;       // writing the rewritten shards (their copied tensors too)
  double copy_seconds = 0;          // copying the other shards and files
  double total_seconds = 0;         // everything, checksums included
};

// FAILED_PRECONDITION when `out` exists and is the directory `in` (callers check it before
// planning, so that this is the first error; RewriteModel checks it again).
Status CheckRewriteTarget(const std::string& in, const std::string& out);

// Rewrites the model directory `in` (its tensors opened as `store`) into `out` (created if
// needed; files of the same names are replaced). FAILED_PRECONDITION when `out` is `in`;
// INVALID_ARGUMENT when a planned tensor is not in `store` or the input's checksums list a
// tensor the model does not have; errors of files name them, a rewriter's error is prefixed
// with the shard being written.
Result<ShardRewriteReport> RewriteModel(const std::string& in, const TensorStore& store,
                                        const std::string& out, const ShardRewritePlan& plan);

}  // namespace engram
