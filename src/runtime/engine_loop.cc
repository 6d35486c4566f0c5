#include "runtime/engine_loop.h"

#include <algorithm>

#include "common/logging.h"
#include "common/mapped_files.h"
#include "text/stop_matcher.h"
#include "text/stream_decoder.h"

namespace engram {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "none";
}

struct EngineLoop::Active {
  std::shared_ptr<RequestState> req;
  SeqId seq = -1;  // -1 while waiting
  Sampler sampler;
  std::optional<StreamDecoder> decoder;
  StopMatcher stops;  // holds back text that may begin a stop string
  std::vector<int32_t> output;
  // The prompt's Engram rows, hashed at admission on the submitting thread (the engine
  // thread only copies them into its prompt chunks' steps).
  PromptRows prompt_rows;
  int32_t pending = -1;  // the sampled token the next decode step feeds
  // The next token is Argmax of the raw logits and nothing else reads them: the step picks it
  // on the device (StepChunk::greedy) and only the id reaches the host.
  const bool device_greedy;
  bool first_token_sent = false;
  double ttft_s = 0;
  // Admission (a sequence slot assigned), first and last token: the request's phases.
  std::optional<Clock::time_point> scheduled;
  Clock::time_point first_token, last_token;

  Active(std::shared_ptr<RequestState> r, const SamplingParams& sp)
      : req(std::move(r)),
        sampler(sp),
        stops(req->params().stop),
        device_greedy(sp.is_plain_greedy() && req->params().logprobs == 0) {
    sampler.SetPrompt(req->params().prompt);
  }
};

EngineLoop::EngineLoop(std::unique_ptr<Engine> engine, std::shared_ptr<const Tokenizer> tokenizer,
                       const ServingOptions& options)
    : engine_(std::move(engine)),
      config_(engine_->config()),
      tokenizer_(std::move(tokenizer)),
      options_(options),
      scheduler_([&] {
        SchedulerLimits l = options.limits;
        l.max_running_seqs = std::min(l.max_running_seqs, engine_->max_seqs());
        l.kv_blocks = engine_->total_kv_blocks();
        l.kv_block_size = engine_->kv_block_size();
        return l;
      }()) {
  stats_.kv_blocks_total = engine_->total_kv_blocks();
  stats_.kv_blocks_free = engine_->free_kv_blocks();
  stats_.seq_slots_total = engine_->max_seqs();
  stats_.seq_slots_free = engine_->free_seq_slots();
  const int64_t context = config_.max_position_embeddings;
  stats_.request_prompt_tokens = Histogram(vllm_buckets::OneTwoFive(context));
  stats_.request_generation_tokens = Histogram(vllm_buckets::OneTwoFive(context));
  stats_.request_params_max_tokens = Histogram(vllm_buckets::OneTwoFive(context));
  thread_ = std::thread([this] { Run(); });
}

EngineLoop::~EngineLoop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint64_t> keys;
  for (auto& [k, a] : active_) keys.push_back(k);
  for (uint64_t k : keys) FinishLocked(k, FinishReason::kCancelled, Unavailable("server stopped"));
}

Result<std::shared_ptr<RequestState>> EngineLoop::Submit(
    std::string id, GenerationParams p, std::optional<Clock::time_point> deadline) {
  auto reject = [&](Status st) -> Result<std::shared_ptr<RequestState>> {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.requests_received;
    ++stats_.requests_rejected;
    return st;
  };
  const int64_t ctx = config_.max_position_embeddings;
  const int64_t vocab = config_.vocab_size;
  if (p.prompt.empty()) return reject(InvalidArgument("prompt is empty (send text or token_ids)"));
  for (size_t i = 0; i < p.prompt.size(); ++i) {
    if (p.prompt[i] < 0 || p.prompt[i] >= vocab) {
      return reject(OutOfRange("prompt token_ids[{}] = {} is outside the vocabulary [0, {})", i,
                               p.prompt[i], vocab));
    }
  }
  const int64_t plen = static_cast<int64_t>(p.prompt.size());
  if (plen >= ctx) {
    return reject(
        OutOfRange("prompt has {} tokens; the context holds {} (max_position_embeddings), "
                   "leaving no room to generate",
                   plen, ctx));
  }
  if (p.max_tokens < 0)
    return reject(InvalidArgument("max_tokens = {} must be >= 0", p.max_tokens));
  if (p.max_tokens == 0) {
    p.max_tokens = static_cast<int>(std::min<int64_t>(options_.max_tokens_default, ctx - plen));
  } else if (plen + p.max_tokens > ctx) {
    return reject(
        OutOfRange("prompt ({} tokens) + max_tokens ({}) = {} exceeds the context of {} "
                   "tokens",
                   plen, p.max_tokens, plen + p.max_tokens, ctx));
  }
  if (Status st = p.sampling.Validate(); !st.ok()) return reject(st);
  if (Status st = StopMatcher::Validate(p.stop); !st.ok()) return reject(st);
  for (int32_t t : p.stop_token_ids) {
    if (t < 0 || t >= vocab) {
      return reject(
          OutOfRange("stop_token_ids value {} is outside the vocabulary [0, {})", t, vocab));
    }
  }
  // Hashed the moment the prompt arrives, off the engine thread (HashPrompt is thread-safe).
  // Longer prompts are hashed in their steps instead: their rows (H x layers x 8 bytes a token)
  // would sit in memory for as long as the request waits.
  constexpr size_t kMaxPromptTokensHashedAhead = 8192;
  PromptRows rows;
  if (p.prompt.size() <= kMaxPromptTokensHashedAhead) rows = engine_->HashPrompt(p.prompt);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.requests_received;
  if (draining_ || stop_) {
    ++stats_.requests_rejected;
    return Unavailable("server is shutting down and accepts no new requests");
  }
  if (!model_health_.ok()) {
    ++stats_.requests_rejected;
    return Unavailable("the model cannot serve: {}", model_health_.message());
  }
  const uint64_t key = next_key_++;
  SchedItem item;
  item.key = key;
  item.prompt_len = static_cast<int>(plen);
  item.max_tokens = p.max_tokens;
  if (Status st = scheduler_.Enqueue(item); !st.ok()) {
    ++stats_.requests_rejected;
    return st;
  }
  const SamplingParams sp = p.sampling;
  auto req = std::make_shared<RequestState>(std::move(id), std::move(p), deadline);
  auto a = std::make_unique<Active>(req, sp);
  a->prompt_rows = std::move(rows);
  if (tokenizer_) a->decoder.emplace(*tokenizer_, req->params().skip_special_tokens);
  active_[key] = std::move(a);
  cv_.notify_all();
  return req;
}

void EngineLoop::BeginDrain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

void EngineLoop::AbortAll(const Status& status) {
  {
    // Only the engine thread may finish requests: it may be inside Engine::Step with them.
    std::lock_guard<std::mutex> lock(mu_);
    abort_status_ = status;
  }
  cv_.notify_all();
}

void EngineLoop::CountRejected() {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.requests_received;
  ++stats_.requests_rejected;
}

Status EngineLoop::ModelHealth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return model_health_;
}

int EngineLoop::InFlight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(active_.size());
}

ServingStats EngineLoop::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ServingStats s = stats_;
  s.uptime_s = std::chrono::duration<double>(Clock::now() - start_).count();
  s.requests_running = scheduler_.running();
  s.requests_waiting = scheduler_.waiting();
  s.kv_blocks_reserved = scheduler_.reserved_blocks();
  s.mean_step_s = s.steps ? step_time_sum_ / static_cast<double>(s.steps) : 0;
  s.mean_batch_tokens = s.steps ? batch_tokens_sum_ / static_cast<double>(s.steps) : 0;
  return s;
}

void EngineLoop::FinishLocked(uint64_t key, FinishReason reason, const Status& status) {
  auto it = active_.find(key);
  if (it == active_.end()) return;
  Active& a = *it->second;
  StreamEvent ev;
  if (a.decoder && reason != FinishReason::kStop) {
    // A character left incomplete, then what the stop matcher still held.
    StopMatcher::Delta d = a.stops.Push(a.decoder->Finish());
    ev.text = d.text + a.stops.Flush();
  }
  ev.finish = reason;
  ev.status = status;
  ev.prompt_tokens = static_cast<int>(a.req->params().prompt.size());
  ev.completion_tokens = static_cast<int>(a.output.size());
  ev.time_to_first_token_s = a.ttft_s;
  const auto now = Clock::now();
  ev.total_time_s = std::chrono::duration<double>(now - a.req->arrival()).count();
  RecordFinishedLocked(a, now);
  a.req->Push(std::move(ev));
  if (a.seq >= 0) engine_->RemoveSequence(a.seq);
  scheduler_.Remove(key);
  ++stats_.requests_finished;
  ++stats_.finished_by_reason[FinishReasonName(reason)];
  active_.erase(it);
}

void EngineLoop::RecordFinishedLocked(const Active& a, Clock::time_point now) {
  const auto secs = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
  const Clock::time_point arrival = a.req->arrival();
  stats_.e2e_request_latency.Add(secs(now - arrival));
  // Phases: arrival -> admission -> first token -> last token (vLLM's FinishedRequestStats).
  double queue = secs(now - arrival), prefill = 0, decode = 0, inference = 0, per_token = 0;
  if (a.scheduled) {
    queue = secs(*a.scheduled - arrival);
    const Clock::time_point end = a.output.empty() ? now : a.last_token;
    prefill = secs((a.output.empty() ? now : a.first_token) - *a.scheduled);
    decode = a.output.empty() ? 0 : secs(a.last_token - a.first_token);
    inference = secs(end - *a.scheduled);
    if (a.output.size() > 1) per_token = decode / static_cast<double>(a.output.size() - 1);
  }
  stats_.request_queue_time.Add(queue);
  stats_.request_prefill_time.Add(prefill);
  stats_.request_decode_time.Add(decode);
  stats_.request_inference_time.Add(inference);
  stats_.request_time_per_output_token.Add(per_token);
  stats_.request_prompt_tokens.Add(static_cast<double>(a.req->params().prompt.size()));
  stats_.request_generation_tokens.Add(static_cast<double>(a.output.size()));
  stats_.request_params_max_tokens.Add(static_cast<double>(a.req->params().max_tokens));
}

int32_t EngineLoop::SampleLocked(Active& a, std::span<const float> logits, StreamEvent& ev) {
  const GenerationParams& p = a.req->params();
  if (p.logprobs > 0) {
    SampleResult r = a.sampler.SampleWithLogprobs(logits, p.logprobs);
    ev.logprobs.push_back({r.token, r.logprob, std::move(r.top)});
    return r.token;
  }
  return a.sampler.Sample(logits);
}

FinishReason EngineLoop::HandleTokenLocked(Active& a, int32_t token, StreamEvent ev) {
  const GenerationParams& p = a.req->params();
  a.output.push_back(token);
  a.pending = token;
  ++stats_.generation_tokens;
  const auto now = Clock::now();
  if (!a.first_token_sent) {
    a.first_token_sent = true;
    a.first_token = now;
    a.ttft_s = std::chrono::duration<double>(now - a.req->arrival()).count();
    stats_.time_to_first_token.Add(a.ttft_s);
  } else {
    stats_.inter_token_latency.Add(std::chrono::duration<double>(now - a.last_token).count());
  }
  a.last_token = now;
  ev.token_ids.push_back(token);
  const bool is_eos = std::find(config_.eos_token_ids.begin(), config_.eos_token_ids.end(),
                                token) != config_.eos_token_ids.end();
  const bool is_stop_id =
      std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end();
  FinishReason finish = FinishReason::kNone;
  if ((is_eos && !p.ignore_eos) || is_stop_id) {
    finish = FinishReason::kStop;  // the stop token's text is not returned
    if (a.decoder) ev.text = a.stops.Flush();
  } else if (a.decoder) {
    StopMatcher::Delta d = a.stops.Push(a.decoder->Push(token));
    ev.text = std::move(d.text);
    if (d.stopped) finish = FinishReason::kStop;
  }
  if (finish == FinishReason::kNone && static_cast<int>(a.output.size()) >= p.max_tokens) {
    finish = FinishReason::kLength;
    if (a.decoder) ev.text += a.stops.Push(a.decoder->Finish()).text + a.stops.Flush();
  }
  a.req->Push(std::move(ev));
  return finish;
}

void EngineLoop::Run() {
  std::vector<PlannedChunk> plan;
  std::vector<StepChunk> chunks;
  std::vector<uint64_t> keys;
  std::vector<Engine::SeqFailure> failed;
  Engine::StepOutput out;  // reused: a step's logits rows and greedy ids
  while (true) {
    progress_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Cancellations and deadlines end requests (and free their resources) first.
      const auto now = Clock::now();
      std::vector<std::pair<uint64_t, Status>> ended;
      for (auto& [k, a] : active_) {
        if (a->req->cancel_requested()) {
          ended.emplace_back(k, Cancelled("request {} cancelled by the client", a->req->id()));
        } else if (a->req->deadline() && now >= *a->req->deadline()) {
          ended.emplace_back(k, Status(StatusCode::kDeadlineExceeded,
                                       fmt::format("request {} passed its deadline after {} tokens",
                                                   a->req->id(), a->output.size())));
        }
      }
      for (auto& [k, st] : ended) {
        FinishLocked(
            k,
            st.code() == StatusCode::kCancelled ? FinishReason::kCancelled : FinishReason::kError,
            st);
      }
      if (abort_status_) {
        std::vector<uint64_t> all;
        for (auto& [k, a] : active_) all.push_back(k);
        for (uint64_t k : all) FinishLocked(k, FinishReason::kCancelled, *abort_status_);
      }
      if (stop_) return;
      // Idle or not, the mapped model files are checked about once a second.
      if (model_health_.ok() && now >= next_file_check_) {
        model_health_ = CheckMappedFiles();
        next_file_check_ = now + std::chrono::seconds(1);
      }
      if (!model_health_.ok() && !active_.empty()) {
        std::vector<uint64_t> all;
        for (auto& [k, a] : active_) all.push_back(k);
        for (uint64_t k : all) FinishLocked(k, FinishReason::kError, model_health_);
      }
      const auto admitted = Clock::now();
      for (uint64_t k : scheduler_.Admit()) {
        auto seq = engine_->AddSequence();
        if (!seq.ok()) {  // cannot happen while max_running_seqs <= engine slots
          FinishLocked(k, FinishReason::kError, seq.status());
          continue;
        }
        active_[k]->seq = *seq;
        active_[k]->scheduled = admitted;
      }
      stats_.kv_blocks_free = engine_->free_kv_blocks();
      stats_.seq_slots_free = engine_->free_seq_slots();
      plan = scheduler_.Plan();
      if (plan.empty()) {
        cv_.wait_for(lock, std::chrono::milliseconds(20));
        continue;
      }
      chunks.clear();
      keys.clear();
      for (const PlannedChunk& c : plan) {
        Active& a = *active_.at(c.key);
        StepChunk ch;
        ch.seq = a.seq;
        if (c.prompt_begin >= 0) {
          ch.tokens = std::span<const int32_t>(a.req->params().prompt.data() + c.prompt_begin,
                                               static_cast<size_t>(c.num_tokens));
          ch.rows = &a.prompt_rows;
          ch.rows_begin = c.prompt_begin;
        } else {
          ch.tokens = std::span<const int32_t>(&a.pending, 1);
        }
        ch.logits = c.last_prompt_chunk;
        ch.greedy = a.device_greedy;
        chunks.push_back(ch);
        keys.push_back(c.key);
      }
    }
    // The forward runs without the lock: handlers keep submitting meanwhile. Only this thread
    // touches the engine and the Active entries named in `plan` (FinishLocked runs here too).
    const auto t0 = Clock::now();
    failed.clear();
    Status stepped = engine_->Step(chunks, /*all_logits=*/false, out, &failed);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    // A model file that shrank mid-step was read as zeros: nothing of this step is kept. The
    // step only reads the fault counter (an atomic); the fstat of every file runs once a second.
    const uint64_t faults = MappedFileFaults();
    const Status files = faults == seen_faults_ ? Status::Ok() : CheckMappedFiles();
    seen_faults_ = faults;
    std::lock_guard<std::mutex> lock(mu_);
    if (!files.ok()) {
      if (model_health_.ok()) spdlog::error("{}", files.message());
      model_health_ = files;
      stepped = files;
    }
    ++stats_.steps;
    step_time_sum_ += dt;
    int batch_tokens = 0, prompt_tokens = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      batch_tokens += static_cast<int>(chunks[i].tokens.size());
      if (plan[i].prompt_begin >= 0) prompt_tokens += plan[i].num_tokens;
    }
    batch_tokens_sum_ += batch_tokens;
    const int64_t generated_before = stats_.generation_tokens;
    if (!stepped.ok()) {
      spdlog::error("step of {} sequences failed: {}", chunks.size(), stepped.ToString());
      for (uint64_t k : keys) FinishLocked(k, FinishReason::kError, stepped);
    } else {
      scheduler_.Commit(plan);
      const int64_t V = config_.vocab_size;
      size_t row = 0, id = 0;  // next logits row / greedy id of `out`
      for (size_t i = 0; i < plan.size(); ++i) {
        if (!plan[i].last_prompt_chunk) continue;
        const bool on_device = chunks[i].greedy;
        std::span<const float> lg;
        int32_t token = -1;
        if (on_device) {
          token = out.greedy_ids[id++];
        } else {
          lg = std::span<const float>(out.logits.data() + row * V, static_cast<size_t>(V));
          ++row;
        }
        Active& a = *active_.at(keys[i]);
        a.prompt_rows = PromptRows();  // the prompt has run: its rows are not needed again
        // Engram rows this sequence needed could not be read: only its request ends.
        auto f_it = std::find_if(failed.begin(), failed.end(),
                                 [&](const Engine::SeqFailure& f) { return f.seq == a.seq; });
        if (f_it != failed.end()) continue;
        // Overflowed weights or activations: the request ends rather than stream garbage.
        if (on_device ? token == kNoGreedyToken : !LogitsUsable(lg)) {
          ++stats_.nonfinite_logits;
          const Status st = Internal(
              "request {}: the model's logits hold NaN or Inf after {} generated tokens (the "
              "weights or activations overflowed); nothing was sampled from them",
              a.req->id(), a.output.size());
          spdlog::error("{}", st.message());
          FinishLocked(keys[i], FinishReason::kError, st);
          continue;
        }
        StreamEvent ev;
        if (on_device) {
          a.sampler.Accept(token);  // what Sample records (no penalty counts to keep)
        } else {
          token = SampleLocked(a, lg, ev);
        }
        const FinishReason f = HandleTokenLocked(a, token, std::move(ev));
        if (f != FinishReason::kNone) FinishLocked(keys[i], f, Status::Ok());
      }
      for (const Engine::SeqFailure& f : failed) {
        for (size_t i = 0; i < plan.size(); ++i) {
          if (chunks[i].seq != f.seq) continue;
          spdlog::error("request {}: its Engram rows could not be read: {}", keys[i],
                        f.status.ToString());
          FinishLocked(keys[i], FinishReason::kError, f.status);
        }
      }
      stats_.prompt_tokens += prompt_tokens;
      stats_.iteration_tokens.Add(
          static_cast<double>(prompt_tokens + (stats_.generation_tokens - generated_before)));
    }
    stats_.kv_blocks_free = engine_->free_kv_blocks();
    stats_.seq_slots_free = engine_->free_seq_slots();
  }
}

}  // namespace engram
