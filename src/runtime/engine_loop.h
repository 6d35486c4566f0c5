// EngineLoop: the serving engine. One thread owns the Engine and runs the step loop:
//   cancellations and deadlines -> admission -> plan (Scheduler) -> Engine::Step ->
//   sample, detokenize, stop checks -> events to each request's stream.
// Requests whose next token is the argmax of the raw logits (temperature 0, no penalties, no
// logprobs) are sampled on the device (StepChunk::greedy): the step returns their token ids,
// not their logits rows; the others are sampled here from the rows.
// gRPC handlers call Submit from any thread and read the RequestState's events.
//
// Guarantees: every accepted request ends with exactly one finishing event (stop, length,
// cancelled, or error with a status); cancellation and deadlines free the sequence's KV
// blocks and Engram state at the next loop iteration.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common/histogram.h"
#include "runtime/engine.h"
#include "runtime/metrics_buckets.h"
#include "runtime/request.h"
#include "runtime/scheduler.h"
#include "text/tokenizer.h"

namespace engram {

struct ServingOptions {
  SchedulerLimits limits;
  int max_tokens_default = 256;
  // The served model's name: the model_name label of the serving metrics (MetricsExporter).
  // engramd sets it to ServerConfig::ServedModelName(), the id /v1/models lists.
  std::string model_name = "engram";
};

// What the loop has counted since it started. Times are seconds; the histograms have vLLM's
// bucket bounds (runtime/metrics_buckets.h).
struct ServingStats {
  double uptime_s = 0;
  int64_t requests_received = 0, requests_rejected = 0, requests_finished = 0;
  int64_t requests_running = 0, requests_waiting = 0;
  std::map<std::string, int64_t> finished_by_reason;
  // Prompt tokens run through the model (counted as their prefill chunks run) and tokens
  // generated; `steps` engine steps ran.
  int64_t prompt_tokens = 0, generation_tokens = 0, steps = 0;
  double mean_step_s = 0, mean_batch_tokens = 0;
  int kv_blocks_total = 0, kv_blocks_free = 0, seq_slots_total = 0, seq_slots_free = 0;
  // KV blocks held for the running requests: each reserves prompt + max_tokens at admission
  // (Scheduler), so this, not the blocks written so far, decides whether the next one waits.
  int kv_blocks_reserved = 0;
  // Requests ended with INTERNAL because their logits held NaN or Inf (model/sampler.h
  // LogitsUsable): overflowed weights or activations, never sampled from.
  int64_t nonfinite_logits = 0;
  // Per token: arrival to first token, and between two tokens of a request.
  Histogram time_to_first_token{vllm_buckets::TimeToFirstToken()};
  Histogram inter_token_latency{vllm_buckets::TimePerOutputToken()};
  // Per finished request, from arrival (queued), admission (scheduled), first and last token:
  // e2e = arrival to finish, queue = arrival to admission, prefill = admission to first token,
  // decode = first to last token, inference = admission to last token, and time per output
  // token = decode / (tokens - 1). A phase the request never reached is 0; a request that
  // ended before its first token spent its prefill time until it ended.
  Histogram e2e_request_latency{vllm_buckets::RequestLatency()};
  Histogram request_queue_time{vllm_buckets::RequestLatency()};
  Histogram request_prefill_time{vllm_buckets::RequestLatency()};
  Histogram request_decode_time{vllm_buckets::RequestLatency()};
  Histogram request_inference_time{vllm_buckets::RequestLatency()};
  Histogram request_time_per_output_token{vllm_buckets::TimePerOutputToken()};
  // Per finished request: its prompt and generated tokens and its max_tokens (1-2-5 bounds up
  // to the context length).
  Histogram request_prompt_tokens, request_generation_tokens, request_params_max_tokens;
  // Per engine step: the prompt tokens it ran plus the tokens it generated (their sum over all
  // steps is prompt_tokens + generation_tokens).
  Histogram iteration_tokens{vllm_buckets::IterationTokens()};
};

class EngineLoop {
 public:
  // `tokenizer` may be null (then text is not produced and text prompts are refused upstream).
  EngineLoop(std::unique_ptr<Engine> engine, std::shared_ptr<const Tokenizer> tokenizer,
             const ServingOptions& options);
  ~EngineLoop();  // stops the thread; unfinished requests end as cancelled

  const ModelConfig& config() const { return config_; }
  // ServingOptions::model_name.
  const std::string& model_name() const { return options_.model_name; }
  // The engine's configuration and thread-safe counters (overlap_stats, tier_stats) may be
  // read from any thread; everything else belongs to the loop's thread.
  const Engine& engine() const { return *engine_; }

  // Validates against the model (ids in the vocabulary, prompt and max_tokens within the
  // context, sampling ranges) and queues the request. Errors: INVALID_ARGUMENT,
  // OUT_OF_RANGE, RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (draining).
  Result<std::shared_ptr<RequestState>> Submit(std::string id, GenerationParams params,
                                               std::optional<Clock::time_point> deadline);
  // Stops accepting new requests (Submit returns UNAVAILABLE); running ones continue.
  void BeginDrain();
  // Asks the engine thread to end every request still running or waiting with `status`
  // (finish reason cancelled) at its next iteration; InFlight() drops to 0 once it has.
  void AbortAll(const Status& status);
  // Counts a request the service refused before Submit (bad parameters).
  void CountRejected();
  // OK while the model's mapped files are intact; DATA_LOSS naming the file once one shrank or
  // changed while served (common/mapped_files.h). Then the loop has ended the requests of the
  // step that read it and refuses new ones with UNAVAILABLE; health should say NOT_SERVING.
  Status ModelHealth() const;
  // Requests running or waiting.
  int InFlight() const;
  ServingStats Stats() const;
  // When the engine thread last began an iteration of its loop. An idle loop waits at most
  // 20 ms per iteration, so this stays fresh while the thread is alive and stops advancing
  // when a step or the thread wedges (engramd's systemd watchdog reads it). Any thread.
  Clock::time_point LastProgress() const {
    return Clock::time_point(Clock::duration(progress_.load(std::memory_order_relaxed)));
  }

 private:
  struct Active;
  void Run();
  void FinishLocked(uint64_t key, FinishReason reason, const Status& status);
  // Observes a finishing request's per-request histograms (ServingStats).
  void RecordFinishedLocked(const Active& a, Clock::time_point now);
  // Samples the next token from the logits (with its logprobs into ev when asked).
  int32_t SampleLocked(Active& a, std::span<const float> logits, StreamEvent& ev);
  // Records the request's next token and pushes its event (text through the stop matcher);
  // returns how the request finishes, if it does.
  FinishReason HandleTokenLocked(Active& a, int32_t token, StreamEvent ev);

  std::unique_ptr<Engine> engine_;
  const ModelConfig config_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  ServingOptions options_;
  const Clock::time_point start_ = Clock::now();
  std::atomic<Clock::rep> progress_{start_.time_since_epoch().count()};  // LastProgress()

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Scheduler scheduler_;                                 // GUARDED_BY(mu_)
  std::map<uint64_t, std::unique_ptr<Active>> active_;  // GUARDED_BY(mu_)
  uint64_t next_key_ = 1;                               // GUARDED_BY(mu_)
  bool draining_ = false;                               // GUARDED_BY(mu_)
  bool stop_ = false;                                   // GUARDED_BY(mu_)
  std::optional<Status> abort_status_;                  // GUARDED_BY(mu_)
  Status model_health_;                                 // GUARDED_BY(mu_): sticky once broken
  Clock::time_point next_file_check_{};                 // engine thread only
  uint64_t seen_faults_ = 0;                            // engine thread only: MappedFileFaults
  ServingStats stats_;                                  // GUARDED_BY(mu_)
  double step_time_sum_ = 0, batch_tokens_sum_ = 0;     // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace engram
