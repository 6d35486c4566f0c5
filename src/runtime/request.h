// A generation request's life between the gRPC handler thread and the engine thread: the
// validated parameters, and a channel of events (tokens, then a finish) the engine pushes
// and the handler pops. Cancellation flows the other way through an atomic flag.
//
// Thread safety: Push/Finish from the engine thread; Pop/TryPop/RequestCancel from the handler;
// every method is safe to call concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/sampler.h"

namespace engram {

using Clock = std::chrono::steady_clock;

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* FinishReasonName(FinishReason r);  // "stop", "length", "cancelled", "error"

struct GenerationParams {
  std::vector<int32_t> prompt;
  int max_tokens = 0;  // > 0 after validation
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool skip_special_tokens = true;  // leave special tokens out of the streamed text
  int logprobs = 0;
};

struct TokenLogprobs {
  int32_t token = 0;
  float logprob = 0.f;
  std::vector<std::pair<int32_t, float>> top;
};

struct StreamEvent {
  std::vector<int32_t> token_ids;
  std::string text;  // complete UTF-8 only
  std::vector<TokenLogprobs> logprobs;
  FinishReason finish = FinishReason::kNone;
  Status status;  // non-OK when the request failed (finish == kError or a refusal)
  // Set with the finish.
  int prompt_tokens = 0;
  int completion_tokens = 0;
  double time_to_first_token_s = 0;
  double total_time_s = 0;
};

// Wakes one reader that waits on several requests (an HTTP stream with n > 1 choices): each
// RequestState it is attached to notifies it on every event. Thread-safe.
class EventSignal {
 public:
  // A counter that changes with every Notify; read it before looking for events.
  uint64_t seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }
  void Notify() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++count_;
    }
    cv_.notify_all();
  }
  // Waits until a Notify after `seen` was read, or `timeout`. False on timeout.
  bool Wait(uint64_t seen, std::chrono::milliseconds timeout) const {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return count_ != seen; });
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  uint64_t count_ = 0;  // GUARDED_BY(mu_)
};

class RequestState {
 public:
  RequestState(std::string id, GenerationParams params, std::optional<Clock::time_point> deadline)
      : id_(std::move(id)),
        params_(std::move(params)),
        deadline_(deadline),
        arrival_(Clock::now()) {}

  const std::string& id() const { return id_; }
  const GenerationParams& params() const { return params_; }
  std::optional<Clock::time_point> deadline() const { return deadline_; }
  Clock::time_point arrival() const { return arrival_; }

  // Engine side.
  void Push(StreamEvent ev) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      if (ev.finish != FinishReason::kNone) finished_ = true;
      events_.push_back(std::move(ev));
      if (signal_) signal_->Notify();
    }
    cv_.notify_all();
  }
  // Handler side: `signal` is notified of every later event (events already queued are not
  // signalled: read them first with TryPop).
  void SetSignal(std::shared_ptr<EventSignal> signal) {
    std::lock_guard<std::mutex> lock(mu_);
    signal_ = std::move(signal);
  }
  bool finished() const {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_;
  }

  // Handler side: waits up to `timeout` for the next event. False on timeout.
  bool Pop(StreamEvent* out, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
    *out = std::move(events_.front());
    events_.pop_front();
    return true;
  }
  // The next event if one is queued, without waiting.
  bool TryPop(StreamEvent* out) {
    std::lock_guard<std::mutex> lock(mu_);
    if (events_.empty()) return false;
    *out = std::move(events_.front());
    events_.pop_front();
    return true;
  }
  void RequestCancel() { cancel_.store(true, std::memory_order_relaxed); }
  bool cancel_requested() const { return cancel_.load(std::memory_order_relaxed); }

 private:
  const std::string id_;
  const GenerationParams params_;
  const std::optional<Clock::time_point> deadline_;
  const Clock::time_point arrival_;
  std::atomic<bool> cancel_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;       // GUARDED_BY(mu_)
  bool finished_ = false;                // GUARDED_BY(mu_)
  std::shared_ptr<EventSignal> signal_;  // GUARDED_BY(mu_)
};

}  // namespace engram
