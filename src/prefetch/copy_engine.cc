#include "prefetch/copy_engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace engram {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

struct CopyEngine::Slot {
  std::vector<std::vector<int64_t>> rows;  // per layer, [tokens * heads]
  int64_t tokens = 0;
  std::vector<Tensor> staged;  // per layer: [tokens * heads, Dh] in the tier's dtype
  std::vector<char> ready;     // per layer
  std::vector<Status> status;  // per layer
  bool done = true;            // the copy thread finished this slot's step
  Clock::time_point issued;
  // Scratch of the copy thread.
  std::vector<int64_t> unique;
  std::vector<char> unique_rows;
};

CopyEngine::CopyEngine(TableTier& tier, Backend& backend, int heads, bool prefetch)
    : tier_(tier), backend_(backend), heads_(heads), prefetch_(prefetch) {
  for (int i = 0; i < 2; ++i) slots_.push_back(std::make_unique<Slot>());
  stats_.layers.resize(static_cast<size_t>(tier.num_layers()));
  stats_.prefetch = prefetch;
  if (prefetch_) thread_ = std::thread([this] { CopyLoop(); });
}

CopyEngine::~CopyEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status CopyEngine::Begin(std::vector<std::vector<int64_t>> rows, int64_t tokens) {
  if (static_cast<int>(rows.size()) != tier_.num_layers()) {
    return Internal("copy engine: {} layers of rows for a tier of {}", rows.size(),
                    tier_.num_layers());
  }
  // Capacity of the conversion buffers (grown, never shrunk).
  if (out_.empty() || out_.dim(0) < tokens) {
    std::vector<int64_t> ids(static_cast<size_t>(tokens * heads_));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
    ENGRAM_ASSIGN_OR_RETURN(identity_, backend_.Alloc(DType::kI64, {tokens, heads_}));
    ENGRAM_RETURN_IF_ERROR(backend_.CopyFromHost(ids.data(), identity_));
    ENGRAM_ASSIGN_OR_RETURN(out_,
                            backend_.Alloc(DType::kF32, {tokens, heads_ * tier_.row_elems()}));
  }
  current_ ^= 1;
  Slot& s = *slots_[current_];
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return s.done; });  // the ring: this slot's previous step is finished
  s.rows = std::move(rows);
  s.tokens = tokens;
  const size_t L = s.rows.size();
  s.ready.assign(L, 0);
  s.status.assign(L, Status::Ok());
  if (s.staged.size() != L) s.staged.resize(L);
  for (Tensor& t : s.staged) {
    if (t.empty() || t.dim(0) < tokens * heads_) {
      t = HostTensor(tier_.dtype(), {tokens * heads_, tier_.row_elems()});
    }
  }
  s.issued = Clock::now();
  if (prefetch_) {
    s.done = false;
    pending_ = &s;
    lock.unlock();
    cv_.notify_all();
  }
  return Status::Ok();
}

Status CopyEngine::FetchLayer(Slot& s, int layer) {
  const auto t0 = Clock::now();
  const std::vector<int64_t>& rows = s.rows[layer];
  s.unique.assign(rows.begin(), rows.end());
  std::sort(s.unique.begin(), s.unique.end());
  s.unique.erase(std::unique(s.unique.begin(), s.unique.end()), s.unique.end());
  const size_t rb = tier_.row_bytes();
  s.unique_rows.resize(s.unique.size() * rb);
  Status st = tier_.ReadRows(layer, s.unique, s.unique_rows.data());
  if (st.ok()) {
    char* dst = s.staged[layer].ptr<char>();
    for (size_t i = 0; i < rows.size(); ++i) {
      const size_t u = static_cast<size_t>(
          std::lower_bound(s.unique.begin(), s.unique.end(), rows[i]) - s.unique.begin());
      std::memcpy(dst + i * rb, s.unique_rows.data() + u * rb, rb);
    }
  }
  const auto t1 = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  LayerOverlap& o = stats_.layers[layer];
  ++o.steps;
  o.rows_requested += rows.size();
  o.unique_rows += s.unique.size();
  o.bytes_moved += s.unique.size() * rb;
  o.transfer_s += Seconds(t0, t1);
  o.AddLatency(Seconds(s.issued, t1));
  return st;
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
    for (int layer = 0; layer < static_cast<int>(s->rows.size()); ++layer) {
      Status st = FetchLayer(*s, layer);
      {
        std::lock_guard<std::mutex> lock(mu_);
        s->status[layer] = st;
        s->ready[layer] = 1;
      }
      cv_.notify_all();
    }
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
  const auto t0 = Clock::now();
  Status st;
  if (prefetch_) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return s.ready[layer] != 0; });
    st = s.status[layer];
  } else {
    st = FetchLayer(s, layer);  // synchronous: the whole fetch is a stall
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.layers[layer].stall_s += Seconds(t0, Clock::now());
  }
  ENGRAM_RETURN_IF_ERROR(st);
  const int64_t T = s.tokens;
  Tensor table = s.staged[layer].Rows(0, T * heads_);
  Tensor ids = identity_.Rows(0, T);
  Tensor out = out_.Rows(0, T);
  ENGRAM_RETURN_IF_ERROR(backend_.GatherRows(table, ids, out));
  return out;
}

Status CopyEngine::End(double step_seconds) {
  Slot& s = *slots_[current_];
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return s.done; });
  stats_.step_s += step_seconds;
  return Status::Ok();
}

OverlapStats CopyEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace engram
