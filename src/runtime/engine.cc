#include "runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "common/cpu_affinity.h"
#include "common/logging.h"
#include "model/table_checksum.h"
#include "model/weights.h"
#include "tiering/host_tier.h"
#include "tiering/numa_topology.h"
#include "tiering/nvme_tier.h"
#include "tiering/table_placement.h"

namespace engram {
namespace {

// Step shapes whose graphs an engine keeps (each graph holds a few hundred kernel nodes).
constexpr size_t kMaxCudaGraphs = 64;

// "1.5 GiB" or, below 1 GiB, "12.0 MiB": the sizes of the load phases' messages.
std::string SizeText(uint64_t bytes) {
  return bytes >= (uint64_t{1} << 30)
             ? fmt::format("{:.1f} GiB", static_cast<double>(bytes) / (1 << 30))
             : fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}
// Eager steps of a shape before it is captured: the first grows every buffer the shape needs;
// waiting for a second keeps shapes that come and go under continuous batching (a batch size
// seen once or twice) from paying for a capture they never win back.
constexpr uint32_t kEagerStepsBeforeCapture = 2;

bool AllSingleTokens(std::span<const StepChunk> chunks) {
  return std::all_of(chunks.begin(), chunks.end(),
                     [](const StepChunk& c) { return c.tokens.size() == 1; });
}

}  // namespace

// Rows gathered before the forward pass (the synchronous path): WaitRows returns at once.
class Engine::GatheredRows final : public EngramRowSource {
 public:
  explicit GatheredRows(std::vector<Tensor> rows) : rows_(std::move(rows)) {}
  Result<Tensor> WaitRows(int i) override {
    if (i < 0 || i >= static_cast<int>(rows_.size())) {
      return Internal("no rows gathered for Engram layer index {}", i);
    }
    return rows_[i];
  }

 private:
  std::vector<Tensor> rows_;
};

Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::Create(ModelFiles files, const EngineOptions& options) {
  std::unique_ptr<Engine> e(new Engine());
  e->files_ = std::move(files);
  e->options_ = options;
  const ModelConfig& c = e->files_.config;
  ENGRAM_ASSIGN_OR_RETURN(e->backend_, CreateBackend(options.backend));
  e->Phase(fmt::format("loading the weights of {}", e->files_.source));
  ENGRAM_ASSIGN_OR_RETURN(e->host_weights_, LoadHostWeights(c, e->files_.store));
  e->Phase(fmt::format("preparing the model on the {} backend", e->backend_->name()));
  const auto prepare_start = std::chrono::steady_clock::now();
  ENGRAM_ASSIGN_OR_RETURN(e->model_, LlamaModel::Create(c, e->host_weights_, *e->backend_));
  // The format the backend runs the Linear weights (the lm_head included) in: what the files
  // hold (weights "auto"), or what BackendOptions::weights converted them to while preparing.
  spdlog::info(
      "engine: Linear weights {} (files: {}, weights: {}) on {}, prepared in {:.2f} s",
      e->backend_->linear_format(), c.quantization ? c.quantization->format() : "float",
      options.backend.weights, e->backend_->name(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - prepare_start).count());
  const int blocks =
      static_cast<int>((options.kv_tokens + options.block_size - 1) / options.block_size);
  ENGRAM_ASSIGN_OR_RETURN(
      KvCache kv, KvCache::Create(*e->backend_, static_cast<int>(c.num_hidden_layers), blocks,
                                  options.block_size, static_cast<int>(c.num_key_value_heads),
                                  static_cast<int>(c.head_dim)));
  e->kv_ = std::make_unique<KvCache>(std::move(kv));
  ENGRAM_ASSIGN_OR_RETURN(e->engram_state_, e->model_->AllocEngramState(options.max_seqs));
  if (c.engram) {
    ENGRAM_ASSIGN_OR_RETURN(NgramHasher h, NgramHasher::Create(*c.engram, e->files_.compression));
    e->hasher_ = std::make_unique<NgramHasher>(std::move(h));
    ENGRAM_RETURN_IF_ERROR(e->CreateTier());
  }
  e->seqs_.resize(static_cast<size_t>(options.max_seqs));
  // A step has at most one logits row per sequence when it has greedy rows (no all_logits).
  ENGRAM_ASSIGN_OR_RETURN(e->greedy_ids_dev_,
                          e->backend_->AllocZeros(DType::kI32, {int64_t{options.max_seqs}}));
  if (options.backend.cuda_graphs) {
    if (e->backend_->device() != Device::kCuda) {
      spdlog::info("engine: backend.cuda_graphs is ignored by the {} backend", e->backend_->name());
    } else if (e->copy_engine_) {
      // The copy engine's per-layer hand-off (the host waits for the copy thread, then the
      // compute stream waits for its event) and the ring slot of its row index change every
      // step; capturing them is not supported yet.
      spdlog::warn(
          "engine: backend.cuda_graphs: steps with Engram rows from the {} tier run without "
          "CUDA graphs (only tables.tier resident is captured)",
          options.tables.tier);
    } else {
      e->graphs_ = std::make_unique<GraphCache>(kMaxCudaGraphs);
      spdlog::info("engine: decode steps run as CUDA graphs (up to {} step shapes kept)",
                   kMaxCudaGraphs);
    }
  }
  spdlog::info("engine: {} on {} backend, {} layers, KV {} blocks x {}, {} Engram layers",
               e->files_.source, e->backend_->name(), c.num_hidden_layers, blocks,
               options.block_size, c.engram ? c.engram->layer_ids.size() : 0);
  return e;
}

Status Engine::CreateTier() {
  const TableOptions& t = options_.tables;
  // Refuses a corrupt or rewritten table before any of it is served (no-op without the file).
  // The dram tier's copy is checked once made: the files are then read once, not twice.
  const std::vector<int>& layer_ids = config().engram->layer_ids;
  std::vector<std::string> names;  // tables and, for FP8 tables, their scales
  std::vector<TableSource> tables;
  std::vector<TableFiles> files;
  for (int l : layer_ids) {
    const EngramWeights& ew = *host_weights_.layers[static_cast<size_t>(l)].engram;
    const std::string table = EngramTableName(*config().engram, l);
    names.push_back(table);
    tables.emplace_back(ew.table, ew.table_scale);
    const TensorInfo* info = files_.store.Info(table);
    if (info == nullptr) continue;
    files.emplace_back(*info);
    if (!ew.table_scale.empty()) {
      const std::string scale = EngramScaleName(*config().engram, l);
      names.push_back(scale);
      if (const TensorInfo* si = files_.store.Info(scale)) files.back().scale = *si;
    }
  }
  const bool fp8 = tables[0].format().fp8();
  const bool verify = t.verify_checksums && !files_.dir.empty();
  // The dram tier's copy can be checked in place only where it holds the files' bytes (FP8
  // rows are stored packed with their scales): FP8 tables are checked from the files.
  if (verify && (t.tier != "dram" || fp8)) {
    Phase(fmt::format("Engram tables: verifying the checksums of {} tensors", names.size()));
    ENGRAM_RETURN_IF_ERROR(VerifyTableChecksums(files_, names));
  }
  // Once a tier holds its own copy of the tables: in-memory (synthetic) tables are freed rather
  // than held twice; file-backed ones are page cache the kernel may reclaim.
  auto release_sources = [&] {
    tables.clear();
    for (const int l : layer_ids) {
      EngramWeights& ew = *host_weights_.layers[static_cast<size_t>(l)].engram;
      ew.table = Tensor();
      ew.table_scale = Tensor();
    }
    for (const std::string& name : names) files_.store.ReleaseInMemory(name);
  };
  if (t.tier == "resident") {
    ENGRAM_ASSIGN_OR_RETURN(ResidentTier tier, ResidentTier::Create(*backend_, tables));
    tier_ = std::make_unique<ResidentTier>(std::move(tier));
    // FP8 tables were packed into a copy of their own (the CPU backend aliases BF16 ones).
    if (fp8) release_sources();
    return Status::Ok();
  }
  if (t.tier != "dram" && t.tier != "nvme") {
    return InvalidArgument("tables.tier \"{}\" (expected one of: resident, dram, nvme)", t.tier);
  }
  CopyEngineOptions c;
  c.prefetch = t.prefetch;
  if (t.transfer == "copy") {
    c.transfer = TransferMode::kCopy;
  } else if (t.transfer == "zero_copy") {
    c.transfer = TransferMode::kZeroCopy;
  } else {
    return InvalidArgument("tables.transfer \"{}\" (expected one of: copy, zero_copy)", t.transfer);
  }
  c.hot_cache_bytes = t.hot_cache_bytes;
  c.hot_cache_policy = t.cache_policy;
  if (t.tier == "dram") {
    HostTierOptions o;
    o.budget_bytes = t.dram_budget_bytes;
    if (files.size() == tables.size()) {  // names the tables in messages
      for (const TableFiles& f : files) o.infos.push_back(f.weight);
    }
    ENGRAM_RETURN_IF_ERROR(PlaceTables(o));
    bool pin = backend_->device() != Device::kCpu;
    if (t.pin == "on" || t.pin == "true") {
      pin = true;
    } else if (t.pin == "off" || t.pin == "false") {
      pin = false;
    } else if (t.pin != "auto") {
      return InvalidArgument("tables.pin \"{}\" (expected one of: auto, on, off)", t.pin);
    }
    if (pin) {
      Backend* b = backend_.get();
      // Each table's allocation is copied into the options: the count is shared.
      auto pinned = std::make_shared<size_t>(0);
      o.register_for_dma = [this, b, pinned, count = tables.size()](void* p, size_t n) {
        Phase(fmt::format("Engram tables: pinning table {} of {} ({})", ++*pinned, count,
                          SizeText(n)));
        return b->RegisterHostMemory(p, n);
      };
      o.unregister_for_dma = [b](void* p, size_t n) { b->UnregisterHostMemory(p, n); };
    }
    size_t table_bytes = 0;
    for (const TableSource& src : tables) {
      table_bytes += static_cast<size_t>(src.rows()) * src.format().bytes();
    }
    Phase(fmt::format("Engram tables: allocating {} in the dram tier{}", SizeText(table_bytes),
                      pin ? " (pinned)" : ""));
    o.on_progress = [this](uint64_t done, uint64_t total) {
      Phase(fmt::format("Engram tables: filling the dram tier, {} of {} ({}%)", SizeText(done),
                        SizeText(total), done * 100 / total));
    };
    ENGRAM_ASSIGN_OR_RETURN(table_tier_, CreateHostTier(tables, o));
    if (verify && !fp8) {
      Phase("Engram tables: verifying the checksums of the dram copy");
      std::map<std::string, Tensor> copies;
      for (size_t i = 0; i < names.size(); ++i) {
        copies[names[i]] = table_tier_->HostTable(static_cast<int>(i));
      }
      ENGRAM_RETURN_IF_ERROR(VerifyTableChecksums(files_, names, 0, nullptr, &copies));
    }
    release_sources();
    if (pin && !table_tier_->pinned()) {
      spdlog::warn("dram tier: the Engram tables could not all be pinned; they stay pageable");
    }
    if (c.transfer == TransferMode::kZeroCopy && backend_->device() != Device::kCpu &&
        !table_tier_->pinned()) {
      return FailedPrecondition(
          "tables.transfer zero_copy: the {} backend reads the tables in place only when they "
          "are pinned, and pinning failed (see the log); set tables.pin on and raise the "
          "locked-memory limit, or use transfer copy",
          backend_->name());
    }
  } else {
    NvmeTierOptions o;
    o.cache_bytes = t.cache_bytes;
    o.policy = t.cache_policy;
    o.merge_bytes = t.nvme_merge_bytes;
    o.reader.fault_hook = t.nvme_fault_hook;
    if (files.size() != tables.size()) {
      return Internal("the model store has no info for some Engram tables");
    }
    Phase(fmt::format("Engram tables: opening the nvme tier ({} tables)", files.size()));
    ENGRAM_ASSIGN_OR_RETURN(table_tier_, CreateNvmeTier(files, o));
  }
  ENGRAM_ASSIGN_OR_RETURN(copy_engine_,
                          CopyEngine::Create(*table_tier_, *backend_, hasher_->num_heads(), c));
  spdlog::info("engine: Engram rows from the {} tier, transfer {}, prefetch {}, hot cache {} B",
               table_tier_->name(), t.transfer, t.prefetch ? "on" : "off", t.hot_cache_bytes);
  return Status::Ok();
}

Status Engine::PlaceTables(HostTierOptions& o) const {
  const TableOptions& t = options_.tables;
  auto topology = NumaTopology::Load();
  if (!topology.ok()) {
    if (t.numa == "auto" || t.numa == "none") {
      spdlog::warn("dram tier: no NUMA placement, hwloc failed: {}", topology.status().ToString());
      return Status::Ok();
    }
    return topology.status().WithContext("tables.numa " + t.numa);
  }
  PlacementRequest r;
  r.mode = t.numa;
  r.node = t.numa_node;
  r.pci_bus_id = backend_->pci_bus_id();
  r.cpus = AllowedCpus();
  ENGRAM_ASSIGN_OR_RETURN(Placement p, ChooseTablePlacement(*topology, r));
  o.numa = p.policy;
  o.node = p.node;
  o.interleave_nodes = p.interleave_nodes;
  spdlog::info("dram tier: NUMA policy {}: {} ({})", NumaPolicyName(p.policy), p.why,
               topology->Summary());
  return Status::Ok();
}

OverlapStats Engine::overlap_stats() const {
  if (!copy_engine_) return OverlapStats{};
  OverlapStats o = copy_engine_->stats();
  const std::vector<int>& ids = config().engram->layer_ids;
  for (size_t i = 0; i < o.layers.size() && i < ids.size(); ++i) o.layers[i].layer_id = ids[i];
  return o;
}

TierStats Engine::tier_stats() const { return table_tier_ ? table_tier_->stats() : TierStats{}; }

Result<SeqId> Engine::AddSequence() {
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (!seqs_[i].alive) {
      seqs_[i].alive = true;
      seqs_[i].tokens.clear();
      return static_cast<SeqId>(i);
    }
  }
  return ResourceExhausted("all {} sequence slots are in use", seqs_.size());
}

void Engine::RemoveSequence(SeqId seq) {
  if (seq < 0 || static_cast<size_t>(seq) >= seqs_.size() || !seqs_[seq].alive) return;
  kv_->Release(seqs_[seq].blocks);
  seqs_[seq].tokens.clear();
  seqs_[seq].alive = false;
}

const std::vector<int32_t>& Engine::Tokens(SeqId seq) const { return seqs_.at(seq).tokens; }

int Engine::free_seq_slots() const {
  int n = 0;
  for (const Sequence& s : seqs_) n += s.alive ? 0 : 1;
  return n;
}

Status Engine::BuildLayout(std::span<const StepChunk> chunks, bool all_logits, bool pad_blocks,
                           BatchLayout& L) {
  const int64_t vocab = config().vocab_size;
  const int64_t max_pos = config().max_position_embeddings;
  std::vector<bool> seen(seqs_.size(), false);
  size_t max_blocks = 0;
  for (const StepChunk& ch : chunks) {
    if (ch.seq < 0 || static_cast<size_t>(ch.seq) >= seqs_.size() || !seqs_[ch.seq].alive) {
      return InvalidArgument("step names sequence {} which is not alive", ch.seq);
    }
    if (seen[ch.seq]) return InvalidArgument("sequence {} appears twice in one step", ch.seq);
    seen[ch.seq] = true;
    if (ch.tokens.empty()) return InvalidArgument("sequence {} has no tokens in this step", ch.seq);
    for (size_t i = 0; i < ch.tokens.size(); ++i) {
      if (ch.tokens[i] < 0 || ch.tokens[i] >= vocab) {
        return OutOfRange("token id {} at index {} is outside the vocabulary [0, {})", ch.tokens[i],
                          i, vocab);
      }
    }
    const int64_t end = static_cast<int64_t>(seqs_[ch.seq].tokens.size() + ch.tokens.size());
    if (end > max_pos) {
      return OutOfRange("sequence {} would reach {} positions, beyond max_position_embeddings {}",
                        ch.seq, end, max_pos);
    }
  }
  // Reserve KV blocks for every chunk first; on failure give back what this step took.
  std::vector<size_t> before;
  for (const StepChunk& ch : chunks) {
    Sequence& s = seqs_[ch.seq];
    before.push_back(s.blocks.size());
    Status st =
        kv_->EnsureCapacity(s.blocks, static_cast<int64_t>(s.tokens.size() + ch.tokens.size()));
    if (!st.ok()) {
      for (size_t i = 0; i < before.size(); ++i) {
        Sequence& r = seqs_[chunks[i].seq];
        std::vector<int32_t> extra(r.blocks.begin() + static_cast<ptrdiff_t>(before[i]),
                                   r.blocks.end());
        r.blocks.resize(before[i]);
        kv_->Release(extra);
      }
      return st;
    }
    max_blocks = std::max(max_blocks, s.blocks.size());
  }
  if (pad_blocks) {
    max_blocks = static_cast<size_t>(BlockTableBucket(static_cast<int32_t>(max_blocks)));
  }
  const int bs = kv_->block_size();
  L = BatchLayout();
  L.block_size = bs;
  L.max_blocks_per_seq = static_cast<int32_t>(max_blocks);
  L.seq_token_start.push_back(0);
  for (size_t si = 0; si < chunks.size(); ++si) {
    const StepChunk& ch = chunks[si];
    const Sequence& s = seqs_[ch.seq];
    const int32_t p0 = static_cast<int32_t>(s.tokens.size());
    for (size_t i = 0; i < ch.tokens.size(); ++i) {
      const int32_t pos = p0 + static_cast<int32_t>(i);
      L.token_ids.push_back(ch.tokens[i]);
      L.positions.push_back(pos);
      L.seq_of_token.push_back(static_cast<int32_t>(si));
      L.slot_mapping.push_back(s.blocks[pos / bs] * bs + pos % bs);
      if (all_logits) L.logit_rows.push_back(static_cast<int32_t>(L.token_ids.size() - 1));
    }
    if (!all_logits && ch.logits) {
      L.logit_rows.push_back(static_cast<int32_t>(L.token_ids.size() - 1));
    }
    L.seq_token_start.push_back(static_cast<int32_t>(L.token_ids.size()));
    L.context_lens.push_back(p0 + static_cast<int32_t>(ch.tokens.size()));
    L.state_slots.push_back(ch.seq);
    for (size_t b = 0; b < max_blocks; ++b) {
      L.block_tables.push_back(b < s.blocks.size() ? s.blocks[b] : 0);
    }
  }
  return L.Validate();
}

PromptRows Engine::HashPrompt(std::span<const int32_t> prompt) const {
  PromptRows r;
  if (!hasher_) return r;
  const int H = hasher_->num_heads();
  r.tokens = static_cast<int64_t>(prompt.size());
  const std::vector<int64_t> tokens(prompt.begin(), prompt.end());
  r.layers.resize(static_cast<size_t>(hasher_->num_layers()));
  for (int i = 0; i < hasher_->num_layers(); ++i) {
    r.layers[i].resize(tokens.size() * static_cast<size_t>(H));
    hasher_->Hash(i, {}, tokens, /*add_offsets=*/true, r.layers[i].data());
  }
  return r;
}

void Engine::HashRows(std::span<const StepChunk> chunks, int64_t T) {
  const int H = hasher_->num_heads();
  const int ctx = hasher_->context_size();
  row_ids_.resize(static_cast<size_t>(hasher_->num_layers()));
  for (std::vector<int64_t>& ids : row_ids_) ids.resize(static_cast<size_t>(T * H));
  std::vector<int64_t> context, tokens;
  int64_t t0 = 0;
  for (const StepChunk& ch : chunks) {
    const std::vector<int32_t>& hist = seqs_[ch.seq].tokens;
    const int64_t n = static_cast<int64_t>(ch.tokens.size());
    const PromptRows* ahead = ch.rows;
    if (ahead != nullptr &&
        (ahead->layers.size() != row_ids_.size() || ch.rows_begin < 0 ||
         ch.rows_begin + n > ahead->tokens || static_cast<int64_t>(hist.size()) != ch.rows_begin)) {
      ahead = nullptr;  // not this chunk's prompt rows: hash
    }
    if (ahead != nullptr) {
      // Hashed at admission: copy this chunk's part.
      for (size_t i = 0; i < row_ids_.size(); ++i) {
        std::copy_n(ahead->layers[i].data() + ch.rows_begin * H, n * H,
                    row_ids_[i].data() + t0 * H);
      }
    } else {
      // The chunk's n-gram context (the sequence's last N-1 tokens) and tokens, once per chunk.
      const size_t c0 = hist.size() > static_cast<size_t>(ctx) ? hist.size() - ctx : 0;
      context.assign(hist.begin() + static_cast<ptrdiff_t>(c0), hist.end());
      tokens.assign(ch.tokens.begin(), ch.tokens.end());
      for (int i = 0; i < hasher_->num_layers(); ++i) {
        hasher_->Hash(i, context, tokens, /*add_offsets=*/true, row_ids_[i].data() + t0 * H);
      }
    }
    t0 += n;
  }
}

Status Engine::GatherResidentRows(int64_t T) {
  const int H = hasher_->num_heads();
  const int64_t D = config().engram->engram_dim();
  const int layers = hasher_->num_layers();
  if (T > rows_capacity_) {
    ++rows_epoch_;       // first: a failure halfway leaves the old buffers freed already
    rows_capacity_ = 0;  // and no capacity, so the next step allocates them all again
    row_ids_dev_.clear();
    rows_dev_.clear();
    for (int i = 0; i < layers; ++i) {
      ENGRAM_ASSIGN_OR_RETURN(Tensor ids, backend_->Alloc(DType::kI64, {T, H}));
      ENGRAM_ASSIGN_OR_RETURN(Tensor rows, backend_->Alloc(DType::kF32, {T, D}));
      row_ids_dev_.push_back(std::move(ids));
      rows_dev_.push_back(std::move(rows));
    }
    rows_capacity_ = T;
  }
  for (int i = 0; i < layers; ++i) {
    Tensor ids = row_ids_dev_[i].Rows(0, T);
    ENGRAM_RETURN_IF_ERROR(backend_->CopyFromHost(row_ids_[i].data(), ids));
    Tensor rows = rows_dev_[i].Rows(0, T);
    ENGRAM_RETURN_IF_ERROR(tier_->Gather(*backend_, i, ids, rows));
  }
  return Status::Ok();
}

Result<std::vector<float>> Engine::Step(std::span<const StepChunk> chunks, bool all_logits,
                                        std::vector<SeqFailure>* failed) {
  StepOutput out;
  ENGRAM_RETURN_IF_ERROR(RunStep(chunks, all_logits, /*greedy=*/false, out, failed));
  return std::move(out.logits);
}

Status Engine::Step(std::span<const StepChunk> chunks, bool all_logits, StepOutput& out,
                    std::vector<SeqFailure>* failed) {
  return RunStep(chunks, all_logits, /*greedy=*/true, out, failed);
}

Status Engine::RunStep(std::span<const StepChunk> chunks, bool all_logits, bool greedy,
                       StepOutput& out, std::vector<SeqFailure>* failed) {
  if (chunks.empty()) return InvalidArgument("step has no sequences");
  if (greedy && all_logits) {
    for (const StepChunk& ch : chunks) {
      if (ch.greedy) {
        return InvalidArgument(
            "sequence {} is greedy in a step with all_logits (greedy rows return ids, not "
            "logits)",
            ch.seq);
      }
    }
  }
  const bool graph = graphs_ != nullptr && AllSingleTokens(chunks);
  BatchLayout layout;
  ENGRAM_RETURN_IF_ERROR(BuildLayout(chunks, all_logits, graph, layout));
  ENGRAM_RETURN_IF_ERROR(backend_->UploadLayout(layout));
  const int64_t T = layout.num_tokens();
  std::vector<Tensor> rows;
  const auto t0 = std::chrono::steady_clock::now();
  if (hasher_) {
    HashRows(chunks, T);
    if (copy_engine_) {
      ENGRAM_RETURN_IF_ERROR(copy_engine_->Begin(row_ids_, T));  // the copy thread starts now
    } else {
      ENGRAM_RETURN_IF_ERROR(GatherResidentRows(T));
      for (const Tensor& r : rows_dev_) rows.push_back(r.Rows(0, T));
    }
  }
  GatheredRows gathered(std::move(rows));
  EngramRowSource& source = copy_engine_ ? static_cast<EngramRowSource&>(*copy_engine_) : gathered;
  auto forward =
      graph ? GraphForward(layout, source) : model_->Forward(layout, source, *kv_, engram_state_);
  if (graph) PublishGraphStats();
  std::vector<RowFailure> row_failures;
  if (copy_engine_) {
    ENGRAM_RETURN_IF_ERROR(copy_engine_->End(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
        &row_failures));
  }
  if (!forward.ok()) {
    if (graphs_) graphs_->Invalidate();  // an error drops the graphs (they are recaptured)
    return forward.status();
  }
  const Tensor logits = std::move(forward).value();
  if (!row_failures.empty()) {
    if (failed == nullptr) return row_failures.front().status;
    // Each failed sequence once, with the first cause its tokens met.
    std::vector<char> seen(chunks.size(), 0);
    for (const RowFailure& f : row_failures) {
      const size_t si = static_cast<size_t>(layout.seq_of_token[static_cast<size_t>(f.token)]);
      if (seen[si]) continue;
      seen[si] = 1;
      failed->push_back({chunks[si].seq, f.status});
    }
  }
  // Outside any graph: the argmax of greedy rows, the copies to the host and the check of the
  // kernels' error word.
  std::vector<char> row_greedy(layout.logit_rows.size(), 0);
  if (greedy && !all_logits) {
    size_t r = 0;
    for (const StepChunk& ch : chunks) {
      if (ch.logits) row_greedy[r++] = ch.greedy ? 1 : 0;
    }
  }
  const Status done = CopyOut(logits, row_greedy, out);
  if (!done.ok()) {
    if (graphs_) graphs_->Invalidate();
    return done;
  }
  for (const StepChunk& ch : chunks) {
    auto& t = seqs_[ch.seq].tokens;
    t.insert(t.end(), ch.tokens.begin(), ch.tokens.end());
  }
  return Status::Ok();
}

Status Engine::CopyOut(const Tensor& logits, const std::vector<char>& row_greedy, StepOutput& out) {
  const int64_t R = static_cast<int64_t>(row_greedy.size()), V = config().vocab_size;
  if (logits.numel() != R * V) {
    return Internal("the forward returned logits {} for {} rows of {}", logits.ShapeString(), R, V);
  }
  const int64_t greedy_rows = std::count(row_greedy.begin(), row_greedy.end(), 1);
  out.greedy_ids.clear();
  out.logits.resize(static_cast<size_t>((R - greedy_rows) * V));
  if (greedy_rows == 0) {
    return R == 0 ? backend_->Synchronize() : backend_->CopyToHost(logits, out.logits.data());
  }
  if (R > greedy_ids_dev_.dim(0)) {  // cannot happen: greedy steps have a row per sequence
    return Internal("{} logit rows with greedy ones; the id buffer holds {}", R,
                    greedy_ids_dev_.dim(0));
  }
  // Runs of rows alike: [r, run_end(r)).
  auto run_end = [&](int64_t r) {
    int64_t e = r + 1;
    while (e < R && row_greedy[e] == row_greedy[r]) ++e;
    return e;
  };
  // The argmax of each run of greedy rows into the same rows of greedy_ids_dev_ (launched
  // first, so they run while the host waits for the copies).
  for (int64_t r = 0, e = 0; r < R; r = e) {
    e = run_end(r);
    if (!row_greedy[r]) continue;
    Tensor ids = greedy_ids_dev_.Rows(r, e);
    ENGRAM_RETURN_IF_ERROR(backend_->ArgmaxRows(logits.Rows(r, e), ids));
  }
  // The other rows, one copy per run.
  float* dst = out.logits.data();
  for (int64_t r = 0, e = 0; r < R; r = e) {
    e = run_end(r);
    if (row_greedy[r]) continue;
    ENGRAM_RETURN_IF_ERROR(backend_->CopyToHost(logits.Rows(r, e), dst));
    dst += (e - r) * V;
  }
  // The ids: R * 4 bytes (the rows of other chunks hold stale values, skipped).
  greedy_ids_host_.resize(static_cast<size_t>(R));
  ENGRAM_RETURN_IF_ERROR(backend_->CopyToHost(greedy_ids_dev_.Rows(0, R), greedy_ids_host_.data()));
  for (int64_t r = 0; r < R; ++r) {
    if (row_greedy[r]) out.greedy_ids.push_back(greedy_ids_host_[r]);
  }
  return Status::Ok();
}

uint64_t Engine::GraphEpoch() const {
  // Each counter only increases, so the sum changes exactly when one of them does.
  return backend_->capture_epoch() + model_->scratch_epoch() + rows_epoch_;
}

GraphStats Engine::graph_stats() const {
  std::lock_guard<std::mutex> lock(graph_mu_);
  return graph_snapshot_;
}

void Engine::PublishGraphStats() {
  GraphStats s = graph_stats_;
  s.invalidations = graphs_->invalidations();
  s.evictions = graphs_->evictions();
  s.cached = graphs_->graphs();
  std::lock_guard<std::mutex> lock(graph_mu_);
  graph_snapshot_ = s;
}

Result<Tensor> Engine::GraphForward(const BatchLayout& layout, EngramRowSource& rows) {
  using Clock = std::chrono::steady_clock;
  using State = GraphCache::Entry::State;
  auto eager = [&] { return model_->Forward(layout, rows, *kv_, engram_state_); };
  auto warn_once = [&](const char* what, const Status& st) {
    if (graph_warned_) {
      spdlog::debug("engine: CUDA graph {} failed ({}); the step runs eagerly", what,
                    st.ToString());
      return;
    }
    graph_warned_ = true;
    spdlog::warn("engine: CUDA graph {} failed ({}); such steps run eagerly (logged once)", what,
                 st.ToString());
  };
  // The layout was uploaded and the rows gathered just before, eagerly: a buffer they grew
  // makes every graph stale now.
  graphs_->SetEpoch(GraphEpoch());
  const GraphKey key{layout.num_tokens(), static_cast<int32_t>(layout.logit_rows.size()),
                     layout.max_blocks_per_seq};
  GraphCache::Entry* e = graphs_->Find(key);
  if (e == nullptr) {
    // A new shape runs eagerly first: that grows every buffer it needs (none may grow while
    // capturing) and loads its kernels; a later step of this shape is captured.
    graphs_->Add(key).eager_steps = 1;
    ++graph_stats_.warmups;
    return eager();
  }
  if (e->state == State::kWarm && e->eager_steps < kEagerStepsBeforeCapture) {
    ++e->eager_steps;
    ++graph_stats_.warmups;
    return eager();
  }
  if (e->state == State::kFailed) {
    ++graph_stats_.eager;
    return eager();
  }
  if (e->state == State::kWarm) {
    const auto t0 = Clock::now();
    Tensor logits;
    auto capture = [&]() -> Result<std::unique_ptr<CapturedGraph>> {
      ENGRAM_RETURN_IF_ERROR(backend_->BeginCapture());
      Result<Tensor> fwd = eager();  // recorded, not run
      if (!fwd.ok()) {
        backend_->AbortCapture();
        return fwd.status();
      }
      logits = std::move(fwd).value();
      return backend_->EndCapture();
    };
    auto captured = capture();
    if (!captured.ok()) {
      ++graph_stats_.capture_failures;
      ++graph_stats_.eager;
      e->state = State::kFailed;
      warn_once("capture", captured.status());
      return eager();  // nothing of the capture ran: the step runs from the start
    }
    e->graph = std::move(captured).value();
    e->logits = std::move(logits);
    e->state = State::kGraph;
    ++graph_stats_.captures;
    graph_stats_.capture_s += std::chrono::duration<double>(Clock::now() - t0).count();
    spdlog::debug(
        "engine: CUDA graph for {} sequences x {} block-table columns captured and instantiated "
        "in {:.3f} ms",
        key.tokens, key.max_blocks,
        std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  const Status st = backend_->Replay(*e->graph);
  if (!st.ok()) {
    // Nothing was launched: drop the graphs (recaptured later) and run this step eagerly.
    warn_once("launch", st);
    graphs_->Invalidate();
    ++graph_stats_.eager;
    return eager();
  }
  ++graph_stats_.replays;
  return e->logits;
}

}  // namespace engram
