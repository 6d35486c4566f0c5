// Engine: owns the backend, the model, the KV cache, the Engram conv state, the hasher and
// the table tier, and runs one forward step over a set of sequence chunks:
//   tokens -> NgramHasher -> rows gathered from the tier -> model forward -> logits (greedy
//   rows: their argmax, picked on the device).
// The offline CLI (logits, generate, bench) and the serving scheduler drive it.
//
// Thread safety: not thread-safe; one engine thread calls every method.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/kv_cache.h"
#include "model/llama_model.h"
#include "model/model_files.h"
#include "prefetch/copy_engine.h"
#include "prefetch/ngram_hasher.h"
#include "runtime/graph_cache.h"
#include "tiering/host_tier.h"
#include "tiering/resident_tier.h"
#include "tiering/table_tier.h"

namespace engram {

// Where the Engram tables live and how their rows reach the forward pass.
struct TableOptions {
  // "resident": held whole by the backend, gathered at the layer (the fastest tier);
  // "dram": copied into NUMA-placed host memory (huge pages when available);
  // "nvme": read in place from the model's files with io_uring + O_DIRECT through a DRAM row
  // cache of cache_bytes (policy "tinylfu" or "lru").
  std::string tier = "resident";
  // dram/nvme: rows are fetched on a copy thread while earlier layers compute (true), or
  // looked up when the Engram layer needs them (false, for comparison).
  bool prefetch = true;
  // dram/nvme: how rows reach the device (copy_engine.h): "copy" (gather on the host into
  // pinned staging, then DMA) or "zero_copy" (the device reads the pinned dram tables in place).
  std::string transfer = "copy";
  // dram: pin the tables through the backend (CUDA: cudaHostRegister, needed for zero_copy and
  // asynchronous DMA; CPU: mlock). "auto" pins on CUDA only; a refused pin is logged and the
  // tables stay usable unpinned (zero_copy then refuses to start).
  std::string pin = "auto";
  // dram: NUMA placement of the tables (tiering/table_placement.h): "auto" (the node nearest
  // the GPU, or holding the engine's CPUs, else interleaved), "bind" (numa_node), "interleave",
  // "none".
  std::string numa = "auto";
  int numa_node = -1;
  uint64_t dram_budget_bytes = 0;  // 0 = unlimited
  uint64_t cache_bytes = 0;
  std::string cache_policy = "tinylfu";
  // dram/nvme: device hot-row cache (HBM on CUDA, an arena of its own on CPU); 0 = none.
  uint64_t hot_cache_bytes = 0;
  // nvme: missed rows whose 4 KiB blocks overlap or touch are read with one request of up to
  // this many bytes (nvme_tier.h); 0 = one read per row.
  uint32_t nvme_merge_bytes = 128 << 10;
  // Verify the Engram tables against the model's engram_checksums.json at start (when the
  // file exists): a mismatch refuses to start, naming file and tensor.
  bool verify_checksums = true;
  // Test hook for the NVMe tier's reader (io_uring_reader.h ReaderOptions::fault_hook).
  std::function<int(uint64_t offset, uint32_t length, int attempt)> nvme_fault_hook;
};

struct EngineOptions {
  // backend.cuda_graphs: decode steps (every chunk one token) run as CUDA graphs, captured once
  // per shape and replayed (src/kernels/cuda/NOTES.md, "CUDA graphs"); CUDA with the resident
  // tier (or no Engram layers) only, the other cases run eagerly.
  BackendOptions backend;
  TableOptions tables;
  int max_seqs = 64;          // sequences alive at once (Engram state slots)
  int64_t kv_tokens = 65536;  // KV cache capacity in positions, over all sequences
  int block_size = 16;
  // Optional: told what Create does next at each long phase (weights, model preparation, table
  // checksums, allocation, pinning, and the dram fill at each percent); engramd forwards it as
  // systemd's STATUS=. Called one at a time, from Create's thread or its copy threads.
  std::function<void(const std::string&)> on_phase;
};

using SeqId = int32_t;

// One sequence's part of a step: the next tokens to run (a prefill chunk or one decode
// token).
// The Engram row ids of a whole prompt, computed ahead of its steps (Engine::HashPrompt: at
// admission, on the caller's thread), so that the engine thread copies instead of hashing.
struct PromptRows {
  int64_t tokens = 0;
  std::vector<std::vector<int64_t>> layers;  // per Engram layer: [tokens, H] absolute rows
};

struct StepChunk {
  SeqId seq = -1;
  std::span<const int32_t> tokens;
  // Whether the step returns this chunk's logits (false for a prompt chunk that is not the
  // prompt's last: its logits would be discarded).
  bool logits = true;
  // With `logits`: the caller takes the argmax of this chunk's logits row as its next token
  // (greedy sampling that reads nothing else of the row). The step then picks that id on the
  // device (Backend::ArgmaxRows) and returns it in StepOutput::greedy_ids instead of the row,
  // which never reaches the host. Only the StepOutput form of Engine::Step reads it, and only
  // without all_logits.
  bool greedy = false;
  // Optional, for a prompt chunk: the prompt's rows from HashPrompt; the chunk's tokens are
  // prompt positions [rows_begin, rows_begin + tokens.size()). Used when the sequence holds
  // exactly the prompt's first rows_begin tokens (otherwise the step hashes, as without).
  const PromptRows* rows = nullptr;
  int64_t rows_begin = 0;
};

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> Create(ModelFiles files, const EngineOptions& options);
  ~Engine();

  const ModelConfig& config() const { return files_.config; }
  const ModelFiles& files() const { return files_; }
  Backend& backend() { return *backend_; }
  int free_kv_blocks() const { return kv_->free_blocks(); }

  // The Engram rows of `prompt` as a new sequence's first tokens (empty without Engram layers).
  // Thread-safe: it reads only the hasher, which never changes after Create. Ids must be in
  // the vocabulary (callers validate).
  PromptRows HashPrompt(std::span<const int32_t> prompt) const;

  // A new, empty sequence. RESOURCE_EXHAUSTED when max_seqs are alive.
  Result<SeqId> AddSequence();
  // Frees the sequence's KV blocks and Engram state slot at once.
  void RemoveSequence(SeqId seq);
  // Tokens the sequence has run so far.
  const std::vector<int32_t>& Tokens(SeqId seq) const;
  int max_seqs() const { return static_cast<int>(seqs_.size()); }
  int free_seq_slots() const;
  int total_kv_blocks() const { return kv_->num_blocks(); }
  int kv_block_size() const { return kv_->block_size(); }
  // Row traffic of the Engram layers (empty for the resident tier) and the tier's counters.
  OverlapStats overlap_stats() const;
  TierStats tier_stats() const;
  // DRAM the dram/nvme tier holds (tables, or the row cache); 0 for the resident tier.
  int64_t tier_resident_bytes() const { return table_tier_ ? table_tier_->resident_bytes() : 0; }
  const TableOptions& table_options() const { return options_.tables; }
  // The format the Linear weights run in: "bf16" (F32/F16/BF16), "int8", "fp8" or "mixed".
  std::string weight_format() const { return backend_->linear_format(); }
  // Whether decode steps run as CUDA graphs (backend.cuda_graphs on a CUDA backend whose Engram
  // rows come from the resident tier), and the counters of that path (all zero when not).
  bool cuda_graphs() const { return graphs_ != nullptr; }
  // Counters of the CUDA-graph path as of the last step; any thread.
  GraphStats graph_stats() const;

  // What a step returns to the host.
  struct StepOutput {
    // F32, row-major [rows, vocab]: with all_logits, one row per token in chunk order; otherwise
    // one row per chunk whose `logits` is set and `greedy` is not (its last token), in chunk
    // order.
    std::vector<float> logits;
    // One id per chunk whose `logits` and `greedy` are set, in chunk order: the argmax of the
    // row the step would otherwise have returned (lowest index among ties; NaN as Argmax in
    // model/sampler.h does it).
    std::vector<int32_t> greedy_ids;
  };
  struct SeqFailure {
    SeqId seq = -1;
    Status status;
  };
  // Runs one forward over the chunks (each sequence at most once), appends their tokens to the
  // sequences and fills `out` (its buffers are reused: keep one StepOutput across steps). Token
  // ids outside the vocabulary: OUT_OF_RANGE naming the id and the vocab size; a greedy chunk
  // with all_logits: INVALID_ARGUMENT; in both cases nothing is changed.
  // Engram rows that could not be read (an NVMe read error after retries): with `failed`, the
  // step succeeds, each sequence that needed such a row is listed once with the cause, and its
  // logits (or greedy id) and state are garbage (the caller must end it); without `failed`, the
  // step fails.
  Status Step(std::span<const StepChunk> chunks, bool all_logits, StepOutput& out,
              std::vector<SeqFailure>* failed = nullptr);
  // The same with every chunk's `greedy` ignored: returns StepOutput::logits, every requested
  // row as logits.
  Result<std::vector<float>> Step(std::span<const StepChunk> chunks, bool all_logits,
                                  std::vector<SeqFailure>* failed = nullptr);

 private:
  struct Sequence {
    bool alive = false;
    std::vector<int32_t> tokens;
    std::vector<int32_t> blocks;
  };
  class GatheredRows;

  Engine() = default;
  // pad_blocks: widen the block tables to BlockTableBucket (graph-eligible steps).
  Status BuildLayout(std::span<const StepChunk> chunks, bool all_logits, bool pad_blocks,
                     BatchLayout& layout);
  // Step with StepChunk::greedy honoured (greedy) or ignored.
  Status RunStep(std::span<const StepChunk> chunks, bool all_logits, bool greedy, StepOutput& out,
                 std::vector<SeqFailure>* failed);
  // Copies the step's results to the host: the argmax of the greedy rows (row_greedy[r]) as ids,
  // the other rows as logits.
  Status CopyOut(const Tensor& logits, const std::vector<char>& row_greedy, StepOutput& out);
  // Hashes the step's tokens for every Engram layer into row_ids_ (absolute rows, [T, H]).
  void HashRows(std::span<const StepChunk> chunks, int64_t tokens);
  Status GatherResidentRows(int64_t tokens);
  Status CreateTier();
  // Tells EngineOptions::on_phase (when set) what Create does next.
  void Phase(const std::string& what) const {
    if (options_.on_phase) options_.on_phase(what);
  }
  // Forward of a graph-eligible step (graphs_ set, every chunk one token): replays the graph of
  // the step's shape, captures it (second step of a shape), or runs eagerly (first step, or
  // after a capture failure). The layout is uploaded and the rows gathered before.
  Result<Tensor> GraphForward(const BatchLayout& layout, EngramRowSource& rows);
  // Increases whenever a buffer a captured forward reads is reallocated (backend, model, rows).
  uint64_t GraphEpoch() const;
  void PublishGraphStats();  // engine thread: graph_stats_ and the cache's counters -> snapshot
  // Resolves tables.numa against the machine (hwloc) into the dram tier's policy.
  Status PlaceTables(HostTierOptions& o) const;

  ModelFiles files_;
  EngineOptions options_;
  std::unique_ptr<Backend> backend_;
  HostWeights host_weights_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<KvCache> kv_;
  std::vector<Tensor> engram_state_;
  std::unique_ptr<NgramHasher> hasher_;
  std::unique_ptr<ResidentTier> tier_;       // tables.tier == "resident"
  std::unique_ptr<TableTier> table_tier_;    // "dram" / "nvme"
  std::unique_ptr<CopyEngine> copy_engine_;  // with table_tier_
  std::vector<Sequence> seqs_;
  // Per-step scratch, reused: hash indices (host and device) and gathered rows per layer.
  std::vector<std::vector<int64_t>> row_ids_;  // per Engram layer
  std::vector<Tensor> row_ids_dev_, rows_dev_;
  int64_t rows_capacity_ = 0;
  uint64_t rows_epoch_ = 0;  // reallocations of rows_dev_
  Tensor greedy_ids_dev_;    // I32 [max_seqs]: ArgmaxRows of a step's greedy rows
  std::vector<int32_t> greedy_ids_host_;
  // Decode steps as CUDA graphs (null: off). Declared last so its graphs go before the backend.
  std::unique_ptr<GraphCache> graphs_;
  GraphStats graph_stats_;  // engine thread's working counters
  mutable std::mutex graph_mu_;
  GraphStats graph_snapshot_;  // GUARDED_BY(graph_mu_): what graph_stats() returns
  bool graph_warned_ = false;  // a capture or replay failure was logged (once per engine)
};

}  // namespace engram
