#include "prefetch/copy_engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/logging.h"

namespace engram {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

struct CopyEngine::Slot {
  int index = 0;                           // position in the ring
  std::vector<std::vector<int64_t>> rows;  // per layer, [tokens * heads]
  int64_t tokens = 0;
  std::vector<char> ready;   // per layer
  std::vector<char> waited;  // per layer: WaitRows ran (its stall is to be read)
  std::vector<Status> status;
  std::vector<RowFailure> failures;
  Status late;       // a copy that failed after its layer was handed over (fails the step at End)
  bool done = true;  // the copy thread finished this slot's step
  Clock::time_point issued;

  struct Layer {
    Tensor staging_rows;   // host, pinned: [cap * H, Dh] in the tier's dtype (kCopy)
    Tensor staging_index;  // host, pinned: I64 [cap * H], arena row of each (token, head)
    Tensor staging_ids;    // host, pinned: I64 [cap * H], missed row ids (kZeroCopy)
    Tensor staging_slots;  // host, pinned: I64 [cap * H], hot slots of admitted rows
    Tensor index_dev, ids_dev, slots_dev;  // device I64 [cap * H]
    // The fetch IssueLayer started and FinishLayer completes.
    Clock::time_point started, issue_end;
    uint64_t unique = 0, hot_hits = 0, moved_rows = 0;
    Status issued;  // how issuing went (the status compute saw, with prefetch)
  };
  std::vector<Layer> layers;

  // Scratch of whoever fetches (the copy thread, or the engine thread in synchronous mode).
  std::vector<int64_t> unique, arena_row, miss_rows, admit_slots, rest;
  std::vector<uint8_t> failed;
};

CopyEngine::CopyEngine(TableTier& tier, Backend& backend, int heads,
                       const CopyEngineOptions& options)
    : tier_(tier),
      backend_(backend),
      heads_(heads),
      options_(options),
      host_device_(backend.device() == Device::kCpu) {}

Result<std::unique_ptr<CopyEngine>> CopyEngine::Create(TableTier& tier, Backend& backend, int heads,
                                                       const CopyEngineOptions& options) {
  const int L = tier.num_layers();
  if (L < 1 || heads < 1) {
    return InvalidArgument("copy engine: {} Engram layers and {} heads, expected >= 1", L, heads);
  }
  if (options.transfer == TransferMode::kZeroCopy) {
    for (int l = 0; l < L; ++l) {
      if (tier.HostTable(l).empty()) {
        return InvalidArgument(
            "tables.transfer zero_copy reads the tables in place from host memory, but the {} "
            "tier does not hold layer {}'s table in memory; use tables.tier dram, or transfer "
            "copy",
            tier.name(), l);
      }
    }
  }
  std::unique_ptr<CopyEngine> e(new CopyEngine(tier, backend, heads, options));
  ENGRAM_ASSIGN_OR_RETURN(e->channel_, backend.CreateRowChannel(2 * L));
  if (options.hot_cache_bytes > 0) {
    const uint64_t per_layer = options.hot_cache_bytes / static_cast<uint64_t>(L);
    e->hot_slots_ = static_cast<int64_t>(per_layer / tier.row_bytes());
    if (e->hot_slots_ < 1) {
      return InvalidArgument(
          "tables.hot_cache_bytes {} holds no row: {} Engram layers of {}-byte rows need at "
          "least {} bytes",
          options.hot_cache_bytes, L, tier.row_bytes(),
          static_cast<uint64_t>(L) * tier.row_bytes());
    }
    ENGRAM_ASSIGN_OR_RETURN(e->hot_, HotRowCache::Create(L, static_cast<uint32_t>(e->hot_slots_),
                                                         options.hot_cache_policy));
  }
  for (int i = 0; i < 2; ++i) {
    e->slots_.push_back(std::make_unique<Slot>());
    e->slots_.back()->index = i;
    e->slots_.back()->layers.resize(static_cast<size_t>(L));
  }
  e->stats_.layers.resize(static_cast<size_t>(L));
  e->stats_.prefetch = options.prefetch;
  if (options.prefetch) e->thread_ = std::thread([p = e.get()] { p->CopyLoop(); });
  return e;
}

CopyEngine::~CopyEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  channel_.reset();  // waits for the copy stream before the arena and staging are freed
}

// Called with both slots idle.
Status CopyEngine::Grow(int64_t tokens) {
  const int64_t cap = std::max({tokens, 2 * capacity_, int64_t{64}});
  // Rows travel in their stored form (FP8: packed codes and scales, U8 [*, bytes]); out_ holds
  // them widened to F32 for the model.
  const RowFormat f = tier_.format();
  const int64_t n = cap * heads_, cols = f.cols();
  // The old buffers go first (peak memory), and until every new one exists the engine holds
  // none: a failed Grow (out of device memory) leaves capacity 0, so the next Begin grows
  // again instead of using a partial arena, and the hot cache maps no row into freed memory.
  capacity_ = 0;
  out_ = Tensor();
  arena_.clear();
  if (hot_) hot_->Clear();
  ENGRAM_ASSIGN_OR_RETURN(out_, backend_.Alloc(DType::kF32, {cap, heads_ * f.dim}));
  for (int l = 0; l < tier_.num_layers(); ++l) {
    ENGRAM_ASSIGN_OR_RETURN(Tensor a,
                            backend_.AllocZeros(f.storage_dtype(), {hot_slots_ + 2 * n, cols}));
    arena_.push_back(std::move(a));
  }
  for (auto& s : slots_) {
    for (Slot::Layer& y : s->layers) {
      // Only what this engine's mode uses: rows staged for copy on a device, the index staged
      // on a device (a host device writes index_dev itself), miss ids for zero_copy, hot slots
      // with a hot cache.
      if (options_.transfer == TransferMode::kCopy && !host_device_) {
        ENGRAM_ASSIGN_OR_RETURN(y.staging_rows,
                                backend_.AllocHostStaging(f.storage_dtype(), {n, cols}));
      }
      if (!host_device_) {
        ENGRAM_ASSIGN_OR_RETURN(y.staging_index, backend_.AllocHostStaging(DType::kI64, {n}));
      }
      ENGRAM_ASSIGN_OR_RETURN(y.index_dev, backend_.Alloc(DType::kI64, {n}));
      if (options_.transfer == TransferMode::kZeroCopy) {
        ENGRAM_ASSIGN_OR_RETURN(y.staging_ids, backend_.AllocHostStaging(DType::kI64, {n}));
        ENGRAM_ASSIGN_OR_RETURN(y.ids_dev, backend_.Alloc(DType::kI64, {n}));
      }
      if (hot_) {
        ENGRAM_ASSIGN_OR_RETURN(y.staging_slots, backend_.AllocHostStaging(DType::kI64, {n}));
        ENGRAM_ASSIGN_OR_RETURN(y.slots_dev, backend_.Alloc(DType::kI64, {n}));
      }
    }
  }
  capacity_ = cap;
  // The copy thread writes these buffers on the channel's own stream (CUDA): the zero fills and
  // any earlier work on them must be done first.
  return backend_.Synchronize();
}

Status CopyEngine::Begin(std::vector<std::vector<int64_t>> rows, int64_t tokens) {
  const int L = tier_.num_layers();
  if (static_cast<int>(rows.size()) != L) {
    return Internal("copy engine: {} layers of rows for a tier of {}", rows.size(), L);
  }
  for (int l = 0; l < L; ++l) {
    if (static_cast<int64_t>(rows[l].size()) != tokens * heads_) {
      return Internal("copy engine: layer {} has {} row ids for {} tokens x {} heads", l,
                      rows[l].size(), tokens, heads_);
    }
    const int64_t R = tier_.rows(l);
    for (const int64_t r : rows[l]) {
      if (r < 0 || r >= R) {
        return OutOfRange("copy engine: row {} outside Engram layer {}'s table of {} rows", r, l,
                          R);
      }
    }
  }
  {
    // Buffers are only resized while the copy thread is idle.
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return slots_[0]->done && slots_[1]->done; });
  }
  if (tokens > capacity_) ENGRAM_RETURN_IF_ERROR(Grow(tokens));
  // This step's copies (hot-slot scatters included) start after every earlier step's compute
  // work, even a failed step's, that may still read the arena.
  ENGRAM_RETURN_IF_ERROR(channel_->FenceCompute());
  if (hot_) hot_->BeginStep();
  current_ ^= 1;
  Slot& s = *slots_[current_];
  std::unique_lock<std::mutex> lock(mu_);
  s.rows = std::move(rows);
  s.tokens = tokens;
  s.ready.assign(static_cast<size_t>(L), 0);
  s.waited.assign(static_cast<size_t>(L), 0);
  s.status.assign(static_cast<size_t>(L), Status::Ok());
  s.failures.clear();
  s.late = Status::Ok();
  s.issued = Clock::now();
  if (options_.prefetch) {
    s.done = false;
    pending_ = &s;
    lock.unlock();
    cv_.notify_all();
  }
  return Status::Ok();
}

Status CopyEngine::FetchLayer(Slot& s, int layer) {
  IssueLayer(s, layer);
  return FinishLayer(s, layer);
}

void CopyEngine::IssueLayer(Slot& s, int layer) {
  const auto t0 = Clock::now();
  const std::vector<int64_t>& rows = s.rows[layer];
  Slot::Layer& y = s.layers[layer];
  Tensor& arena = arena_[layer];
  const int64_t base = hot_slots_ + static_cast<int64_t>(s.index) * capacity_ * heads_;

  s.unique.assign(rows.begin(), rows.end());
  std::sort(s.unique.begin(), s.unique.end());
  s.unique.erase(std::unique(s.unique.begin(), s.unique.end()), s.unique.end());
  const size_t U = s.unique.size();

  // Where each unique row will be in the arena: a hot slot, or this slot's region, where the
  // misses go in the order [admitted to the hot cache..., the rest...].
  s.arena_row.assign(U, -1);
  s.miss_rows.clear();
  s.admit_slots.clear();
  s.rest.clear();
  uint64_t hits = 0;
  for (size_t i = 0; i < U; ++i) {
    const int64_t r = s.unique[i];
    const int64_t hot = hot_ ? hot_->Lookup(layer, r) : -1;
    if (hot >= 0) {
      s.arena_row[i] = hot;
      ++hits;
      continue;
    }
    const int64_t slot = hot_ ? hot_->Admit(layer, r) : -1;
    if (slot >= 0) {
      s.arena_row[i] = base + static_cast<int64_t>(s.miss_rows.size());
      s.miss_rows.push_back(r);
      s.admit_slots.push_back(slot);
    } else {
      s.rest.push_back(static_cast<int64_t>(i));
    }
  }
  const int64_t A = static_cast<int64_t>(s.miss_rows.size());
  for (const int64_t i : s.rest) {
    s.arena_row[static_cast<size_t>(i)] = base + static_cast<int64_t>(s.miss_rows.size());
    s.miss_rows.push_back(s.unique[static_cast<size_t>(i)]);
  }
  const int64_t M = static_cast<int64_t>(s.miss_rows.size());

  Status st;               // a failure of the layer as a whole (fails the step)
  Status row_error;        // rows that could not be read (fails only their tokens' requests)
  bool scattered = false;  // the admitted rows' Scatter into hot slots was issued
  s.failed.assign(static_cast<size_t>(M), 0);
  if (M > 0) {
    Tensor region = arena.Rows(base, base + M);
    if (options_.transfer == TransferMode::kCopy) {
      // A host-memory device (the CPU backend) reads straight into the arena: no staging copy.
      Tensor staged = host_device_ ? region : y.staging_rows.Rows(0, M);
      const Status rs = tier_.ReadRows(layer, s.miss_rows, staged.data, s.failed);
      const bool partial = rs.code() == StatusCode::kUnavailable &&
                           std::find(s.failed.begin(), s.failed.end(), 1) != s.failed.end();
      if (partial) {
        row_error = rs;
      } else {
        st = rs;
      }
      if (st.ok() && !host_device_) st = channel_->Upload(staged, region);
    } else {
      std::memcpy(y.staging_ids.data, s.miss_rows.data(), static_cast<size_t>(M) * 8);
      Tensor ids = y.ids_dev.Rows(0, M);
      st = channel_->Upload(y.staging_ids.Rows(0, M), ids);
      if (st.ok()) st = channel_->Gather(tier_.HostTable(layer), ids, region);
    }
    if (st.ok() && A > 0) {
      for (int64_t k = 0; k < A; ++k) {
        // An unreadable row is not kept: its slot is freed (the zeros written there unused).
        if (s.failed[static_cast<size_t>(k)]) hot_->Forget(layer, s.miss_rows[k]);
      }
      std::memcpy(y.staging_slots.data, s.admit_slots.data(), static_cast<size_t>(A) * 8);
      Tensor slots = y.slots_dev.Rows(0, A);
      st = channel_->Upload(y.staging_slots.Rows(0, A), slots);
      if (st.ok()) st = channel_->Scatter(arena.Rows(base, base + A), slots, arena);
      scattered = st.ok();
    }
  }
  if (A > 0 && !scattered) {
    // The admitted rows never reached their hot slots: the cache must not claim them.
    for (int64_t k = 0; k < A; ++k) hot_->Forget(layer, s.miss_rows[k]);
  }
  if (st.ok()) {
    auto* index = (host_device_ ? y.index_dev : y.staging_index).ptr<int64_t>();
    for (size_t i = 0; i < rows.size(); ++i) {
      const size_t u = static_cast<size_t>(
          std::lower_bound(s.unique.begin(), s.unique.end(), rows[i]) - s.unique.begin());
      index[i] = s.arena_row[u];
    }
    const int64_t N = static_cast<int64_t>(rows.size());
    Tensor index_dev = y.index_dev.Rows(0, N);
    if (!host_device_) st = channel_->Upload(y.staging_index.Rows(0, N), index_dev);
  }
  // Always marked, so that WaitMark below also covers copies issued before a failure.
  const int mark = MarkOf(s.index, layer);
  const Status mark_st = channel_->Mark(mark);
  if (st.ok()) st = mark_st;
  if (!row_error.ok()) {
    // Every token that needs an unreadable row.
    std::vector<int64_t> bad;
    for (int64_t k = 0; k < M; ++k) {
      if (s.failed[static_cast<size_t>(k)]) bad.push_back(s.miss_rows[k]);
    }
    std::sort(bad.begin(), bad.end());
    std::vector<char> token_bad(static_cast<size_t>(s.tokens), 0);
    for (size_t i = 0; i < rows.size(); ++i) {
      if (std::binary_search(bad.begin(), bad.end(), rows[i])) token_bad[i / heads_] = 1;
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (int64_t t = 0; t < s.tokens; ++t) {
      if (token_bad[static_cast<size_t>(t)]) s.failures.push_back({t, row_error});
    }
  }
  // With prefetch, compute may queue its wait for this layer now (the device waits for the
  // mark); the copy thread waits for the rows to land in FinishLayer, after the later layers
  // are issued, so their host gathers overlap this layer's transfer.
  if (options_.prefetch) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      s.status[layer] = st;
      s.ready[layer] = 1;
    }
    cv_.notify_all();
  }
  y.started = t0;
  y.issue_end = Clock::now();
  y.unique = U;
  y.hot_hits = hits;
  y.moved_rows = static_cast<uint64_t>(M);
  y.issued = std::move(st);
}

Status CopyEngine::FinishLayer(Slot& s, int layer) {
  Slot::Layer& y = s.layers[layer];
  // The layer's transfer time is its own issuing plus the wait for its rows to land, not the
  // later layers' issuing in between (a lower bound when the rows landed during that).
  const auto w0 = Clock::now();
  const Status landed = channel_->WaitMark(MarkOf(s.index, layer));
  const auto t1 = Clock::now();
  const double waited = Seconds(w0, t1);
  std::lock_guard<std::mutex> lock(mu_);
  if (!landed.ok() && s.late.ok()) s.late = landed;
  LayerOverlap& o = stats_.layers[layer];
  ++o.steps;
  o.rows_requested += s.rows[layer].size();
  o.unique_rows += y.unique;
  o.hot_hits += y.hot_hits;
  o.bytes_moved += y.moved_rows * tier_.row_bytes();
  o.transfer_s += Seconds(y.started, y.issue_end) + waited;
  o.AddLatency(Seconds(s.issued, y.issue_end) + waited);
  return y.issued.ok() ? landed : y.issued;
}

void CopyEngine::CopyLoop() {
  while (true) {
    Slot* s = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || pending_ != nullptr; });
      if (stop_) return;
      s = pending_;
      pending_ = nullptr;
    }
    // Every layer is issued (and handed over) before any is waited for.
    const int L = static_cast<int>(s->rows.size());
    for (int layer = 0; layer < L; ++layer) IssueLayer(*s, layer);
    for (int layer = 0; layer < L; ++layer) (void)FinishLayer(*s, layer);  // late: s->late
    {
      std::lock_guard<std::mutex> lock(mu_);
      s->done = true;
    }
    cv_.notify_all();
  }
}

Result<Tensor> CopyEngine::WaitRows(int layer) {
  Slot& s = *slots_[current_];
  if (layer < 0 || layer >= static_cast<int>(s.rows.size())) {
    return Internal("copy engine: no rows for Engram layer index {}", layer);
  }
  const int mark = MarkOf(current_, layer);
  ENGRAM_RETURN_IF_ERROR(channel_->BeginWait(mark));
  Status st;
  if (options_.prefetch) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return s.ready[layer] != 0; });
    st = s.status[layer];
  } else {
    // Synchronous: the rows are fetched only once compute has reached this layer, so the
    // whole fetch is a stall (on CUDA the host first waits for the device to get here).
    st = channel_->HostWaitBegin(mark);
    if (st.ok()) st = FetchLayer(s, layer);
  }
  ENGRAM_RETURN_IF_ERROR(channel_->EndWait(mark));
  s.waited[layer] = 1;
  ENGRAM_RETURN_IF_ERROR(st);
  const int64_t T = s.tokens;
  Tensor index = s.layers[layer].index_dev.Rows(0, T * heads_).Reshaped({T, heads_});
  Tensor out = out_.Rows(0, T);
  ENGRAM_RETURN_IF_ERROR(backend_.GatherRows(arena_[layer], index, out));
  return out;
}

Status CopyEngine::End(double step_seconds, std::vector<RowFailure>* failures) {
  Slot& s = *slots_[current_];
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return s.done; });
  }
  std::vector<double> stall(s.rows.size(), 0.0);
  for (size_t l = 0; l < s.rows.size(); ++l) {
    if (!s.waited[l]) continue;
    ENGRAM_ASSIGN_OR_RETURN(stall[l],
                            channel_->StallSeconds(MarkOf(current_, static_cast<int>(l))));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!s.late.ok()) return s.late;  // rows handed over, then failed to land
  for (size_t l = 0; l < stall.size(); ++l) stats_.layers[l].stall_s += stall[l];
  stats_.step_s += step_seconds;
  if (failures != nullptr) {
    // One entry per token, even when several layers failed it.
    std::sort(s.failures.begin(), s.failures.end(),
              [](const RowFailure& a, const RowFailure& b) { return a.token < b.token; });
    for (size_t i = 0; i < s.failures.size(); ++i) {
      if (i == 0 || s.failures[i].token != s.failures[i - 1].token) {
        failures->push_back(s.failures[i]);
      }
    }
  }
  return Status::Ok();
}

OverlapStats CopyEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace engram
