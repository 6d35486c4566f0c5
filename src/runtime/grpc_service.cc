#include "runtime/grpc_service.h"

#include <algorithm>
#include <limits>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/row_format.h"
#include "model/engram_geometry.h"
#include "model/weights.h"
#include "text/chat_template.h"
#include "text/stop_matcher.h"
#include "text/stream_decoder.h"
#include "text/utf8.h"

namespace engram {
namespace {

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError:
      return v1::FINISH_REASON_ERROR;
    case FinishReason::kNone:
      break;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

// The deadline of the call on the steady clock, if it has one.
std::optional<Clock::time_point> DeadlineOf(const grpc::ServerContext& ctx) {
  const auto d = ctx.deadline();
  if (d == std::chrono::system_clock::time_point::max()) return std::nullopt;
  const auto left = d - std::chrono::system_clock::now();
  if (left > std::chrono::hours(24 * 365)) return std::nullopt;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(left);
}

// request_id: echoed in responses (a proto string there) and logs, so UTF-8 and short.
Status CheckRequestId(const std::string& id) {
  constexpr size_t kMaxRequestIdBytes = 256;
  if (id.size() > kMaxRequestIdBytes) {
    return InvalidArgument("request_id is {} bytes, expected at most {}", id.size(),
                           kMaxRequestIdBytes);
  }
  if (const size_t bad = utf8::FirstInvalid(id); bad != utf8::kValid) {
    return InvalidArgument("request_id: byte {} is not valid UTF-8 (expected UTF-8 text)", bad);
  }
  return Status::Ok();
}

}  // namespace

grpc::Status ToGrpc(const Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), st.message());
}

v1::ModelInfo DescribeModel(const Engine& engine, const std::string& backend, bool has_tokenizer) {
  const ModelConfig& c = engine.config();
  v1::ModelInfo m;
  m.set_source(engine.files().source);
  m.set_architecture(c.model_type);
  m.set_vocab_size(static_cast<int32_t>(c.vocab_size));
  m.set_hidden_size(static_cast<int32_t>(c.hidden_size));
  m.set_num_layers(static_cast<int32_t>(c.num_hidden_layers));
  m.set_num_attention_heads(static_cast<int32_t>(c.num_attention_heads));
  m.set_num_key_value_heads(static_cast<int32_t>(c.num_key_value_heads));
  m.set_head_dim(static_cast<int32_t>(c.head_dim));
  m.set_max_context(static_cast<int32_t>(c.max_position_embeddings));
  m.set_backend(backend);
  m.set_weights(engine.weight_format());
  m.set_has_tokenizer(has_tokenizer);
  for (int64_t e : c.eos_token_ids) m.add_eos_token_ids(static_cast<int32_t>(e));
  if (c.engram) {
    const EngramConfig& e = *c.engram;
    v1::EngramInfo* ei = m.mutable_engram();
    for (int l : e.layer_ids) ei->add_layer_ids(l);
    ei->set_max_ngram_size(e.max_ngram_size);
    ei->set_n_embed_per_ngram(e.n_embed_per_ngram);
    ei->set_n_head_per_ngram(e.n_head_per_ngram);
    ei->set_kernel_size(e.kernel_size);
    ei->set_compressed_vocab_size(engine.files().compression.num_compressed());
    int64_t bytes = 0;
    if (auto geo = ComputeEngramGeometry(e); geo.ok()) {
      for (size_t i = 0; i < geo->size(); ++i) {
        ei->add_table_rows((*geo)[i].total_rows);
        const int layer = e.layer_ids[i];
        if (const TensorInfo* ti = engine.files().store.Info(EngramTableName(e, layer))) {
          bytes += static_cast<int64_t>(ti->nbytes);
          const RowFormat row{ti->dtype, ti->shape.size() == 2 ? ti->shape[1] : 0};
          ei->set_row_dtype(std::string(DTypeName(row.dtype)));
          ei->set_row_bytes(static_cast<int64_t>(row.bytes()));
        }
        if (const TensorInfo* si = engine.files().store.Info(EngramScaleName(e, layer))) {
          bytes += static_cast<int64_t>(si->nbytes);
        }
      }
    }
    ei->set_table_bytes(bytes);
    ei->set_variant(e.v41() ? "v41" : "paper");
    v1::TierInfo* t = m.add_tiers();
    const TableOptions& to = engine.table_options();
    t->set_name(to.tier);
    if (to.tier == "resident") {
      t->set_capacity_bytes(bytes);
      t->set_used_bytes(bytes);
    } else {
      t->set_capacity_bytes(
          static_cast<int64_t>(to.tier == "nvme" ? to.cache_bytes : to.dram_budget_bytes));
      t->set_used_bytes(engine.tier_resident_bytes());
    }
    if (to.tier == "nvme") {
      v1::TierInfo* disk = m.add_tiers();
      disk->set_name("nvme-files");
      disk->set_capacity_bytes(bytes);
      disk->set_used_bytes(bytes);
    }
  }
  return m;
}

void EngramService::SetLoop(EngineLoop* loop, std::shared_ptr<const Tokenizer> tokenizer,
                            v1::ModelInfo info) {
  tokenizer_ = std::move(tokenizer);
  info_ = std::move(info);
  loop_.store(loop, std::memory_order_release);
}

grpc::Status EngramService::Authorize(const grpc::ServerContext& ctx) const {
  if (!options_.authorize) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  const auto it = md.find("authorization");
  if (it != md.end() &&
      options_.authorize(std::string_view(it->second.data(), it->second.size()))) {
    return grpc::Status::OK;
  }
  spdlog::info("grpc: call from {} unauthenticated (missing or invalid API key)", ctx.peer());
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or invalid API key");
}

Result<std::vector<int32_t>> EngramService::EncodeChat(const v1::ChatPrompt& chat) const {
  EngineLoop* loop = loop_.load(std::memory_order_acquire);
  const std::shared_ptr<const ChatTemplate> tmpl =
      loop ? loop->engine().files().chat_template : nullptr;
  if (!tokenizer_ || !tmpl) {
    return FailedPrecondition(
        "prompt.chat: the model has no {} (tokenizer_config.json beside the tokenizer gives the "
        "chat template, or chat_template: in model.yaml)",
        tokenizer_ ? "chat template" : "tokenizer");
  }
  if (chat.messages().empty()) return InvalidArgument("prompt.chat.messages is empty");
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (const size_t bad = utf8::FirstInvalid(m.content()); bad != utf8::kValid) {
      return InvalidArgument("prompt.chat.messages[{}].content is not valid UTF-8 (byte {})", i,
                             bad);
    }
    if (m.role().empty()) return InvalidArgument("prompt.chat.messages[{}].role is empty", i);
    messages.push_back({{"role", m.role()}, {"content", m.content()}});
  }
  auto text = tmpl->Render(messages, chat.add_generation_prompt(), nullptr, nullptr);
  if (!text.ok())
    return InvalidArgument("prompt.chat: the chat template failed: {}", text.status().message());
  auto ids = tokenizer_->Encode(*text, /*add_special_tokens=*/false);
  if (!ids.ok()) return ids.status().WithContext("prompt.chat");
  if (ids->empty()) return InvalidArgument("prompt.chat renders to no tokens");
  return std::move(ids).value();
}

Result<GenerationParams> EngramService::ToParams(const v1::GenerateRequest& req) const {
  GenerationParams p;
  switch (req.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (!tokenizer_) {
        return FailedPrecondition(
            "the model has no tokenizer: send prompt.token_ids instead of "
            "prompt.text");
      }
      if (req.text().empty()) return InvalidArgument("prompt.text is empty");
      auto ids = tokenizer_->Encode(req.text(), options_.add_special_tokens);
      if (!ids.ok()) return ids.status().WithContext("prompt.text");
      p.prompt = std::move(ids).value();
      break;
    }
    case v1::GenerateRequest::kChat: {
      ENGRAM_ASSIGN_OR_RETURN(p.prompt, EncodeChat(req.chat()));
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      p.prompt.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
      if (p.prompt.empty()) return InvalidArgument("prompt.token_ids is empty");
      break;
    default:
      return InvalidArgument("prompt is empty: set prompt.text or prompt.token_ids");
  }
  p.max_tokens = req.max_tokens();
  if (p.max_tokens < 0) return InvalidArgument("max_tokens = {} must be >= 0", p.max_tokens);
  const v1::SamplingParams& s = req.sampling();
  p.sampling.temperature = s.temperature();
  p.sampling.top_k = s.top_k();
  p.sampling.top_p = s.top_p() == 0.f ? 1.f : s.top_p();
  p.sampling.min_p = s.min_p();
  p.sampling.repetition_penalty = s.repetition_penalty() == 0.f ? 1.f : s.repetition_penalty();
  p.sampling.presence_penalty = s.presence_penalty();
  p.sampling.frequency_penalty = s.frequency_penalty();
  p.sampling.seed = s.seed_choice_case() == v1::SamplingParams::kSeed ? s.seed() : next_id_.load();
  if (req.logprobs() < 0 || req.logprobs() > options_.max_logprobs) {
    return InvalidArgument("logprobs = {} must be in [0, {}]", req.logprobs(),
                           options_.max_logprobs);
  }
  p.logprobs = req.logprobs();
  p.sampling.logprobs = p.logprobs;
  for (int i = 0; i < req.stop_size(); ++i) {
    if (const size_t bad = utf8::FirstInvalid(req.stop(i)); bad != utf8::kValid) {
      return InvalidArgument("stop[{}]: byte {} is not valid UTF-8 (expected UTF-8 text)", i, bad);
    }
  }
  p.stop.assign(req.stop().begin(), req.stop().end());
  ENGRAM_RETURN_IF_ERROR(StopMatcher::Validate(p.stop));
  p.stop_token_ids.assign(req.stop_token_ids().begin(), req.stop_token_ids().end());
  p.ignore_eos = req.ignore_eos();
  ENGRAM_RETURN_IF_ERROR(p.sampling.Validate());
  return p;
}

grpc::Status EngramService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                     grpc::ServerWriter<v1::GenerateResponse>* writer) {
  if (grpc::Status a = Authorize(*ctx); !a.ok()) return a;
  EngineLoop* loop = loop_.load(std::memory_order_acquire);
  if (!loop) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  if (Status st = CheckRequestId(req->request_id()); !st.ok()) {
    loop->CountRejected();
    return ToGrpc(st);
  }
  const std::string id =
      req->request_id().empty() ? fmt::format("req-{}", next_id_.fetch_add(1)) : req->request_id();
  auto params = ToParams(*req);
  if (!params.ok()) {
    loop->CountRejected();
    return ToGrpc(params.status());
  }
  auto state = loop->Submit(id, std::move(params).value(), DeadlineOf(*ctx));
  if (!state.ok()) return ToGrpc(state.status());
  RequestState& r = **state;
  bool sent_any = false;
  StreamEvent ev;
  while (true) {
    if (!r.Pop(&ev, std::chrono::milliseconds(50))) {
      if (ctx->IsCancelled()) r.RequestCancel();
      continue;
    }
    const bool last = ev.finish != FinishReason::kNone;
    if (last && !ev.status.ok() && !sent_any) {
      return ToGrpc(ev.status);  // failed before any token: the status alone says it
    }
    v1::GenerateResponse out;
    out.set_request_id(id);
    for (int32_t t : ev.token_ids) out.add_token_ids(t);
    out.set_text(std::move(ev.text));
    for (const TokenLogprobs& lp : ev.logprobs) {
      v1::TokenLogprobs* m = out.add_logprobs();
      m->mutable_sampled()->set_token_id(lp.token);
      m->mutable_sampled()->set_logprob(lp.logprob);
      for (auto [tok, val] : lp.top) {
        v1::TokenLogprob* t = m->add_top();
        t->set_token_id(tok);
        t->set_logprob(val);
      }
    }
    if (last) {
      out.set_finish_reason(ToProto(ev.finish));
      v1::Usage* u = out.mutable_usage();
      u->set_prompt_tokens(ev.prompt_tokens);
      u->set_completion_tokens(ev.completion_tokens);
      u->set_time_to_first_token_s(ev.time_to_first_token_s);
      u->set_total_time_s(ev.total_time_s);
    }
    if (!writer->Write(out)) {
      r.RequestCancel();  // the client is gone; the loop frees the sequence
      if (!last) continue;
    }
    sent_any = true;
    if (last) return ToGrpc(ev.status);
  }
}

grpc::Status EngramService::Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                                     v1::TokenizeResponse* resp) {
  if (grpc::Status a = Authorize(*ctx); !a.ok()) return a;
  if (!loop_.load(std::memory_order_acquire)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  }
  if (!tokenizer_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "the model has no tokenizer");
  }
  auto ids = tokenizer_->Encode(req->text(), req->add_special_tokens());
  if (!ids.ok()) return ToGrpc(ids.status().WithContext("text"));  // e.g. invalid UTF-8
  for (int32_t t : *ids) resp->add_token_ids(t);
  return grpc::Status::OK;
}

grpc::Status EngramService::Detokenize(grpc::ServerContext* ctx, const v1::DetokenizeRequest* req,
                                       v1::DetokenizeResponse* resp) {
  if (grpc::Status a = Authorize(*ctx); !a.ok()) return a;
  if (!loop_.load(std::memory_order_acquire)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  }
  if (!tokenizer_) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "the model has no tokenizer");
  }
  const int64_t vocab = tokenizer_->vocab_size();
  std::vector<int32_t> ids(req->token_ids().begin(), req->token_ids().end());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return ToGrpc(OutOfRange("token_ids[{}] = {} is outside the tokenizer's vocabulary [0, {})",
                               i, ids[i], vocab));
    }
  }
  StreamDecoder dec(*tokenizer_, req->skip_special_tokens());
  std::string text;
  for (int32_t t : ids) text += dec.Push(t);
  text += dec.Finish();
  resp->set_text(std::move(text));
  return grpc::Status::OK;
}

grpc::Status EngramService::GetModelInfo(grpc::ServerContext* ctx, const v1::GetModelInfoRequest*,
                                         v1::ModelInfo* resp) {
  if (grpc::Status a = Authorize(*ctx); !a.ok()) return a;
  if (!loop_.load(std::memory_order_acquire)) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  }
  *resp = info_;
  return grpc::Status::OK;
}

grpc::Status EngramService::GetStats(grpc::ServerContext* ctx, const v1::GetStatsRequest*,
                                     v1::Stats* resp) {
  if (grpc::Status a = Authorize(*ctx); !a.ok()) return a;
  EngineLoop* loop = loop_.load(std::memory_order_acquire);
  if (!loop) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "the model is still loading");
  const ServingStats s = loop->Stats();
  resp->set_uptime_s(s.uptime_s);
  resp->set_requests_received(s.requests_received);
  resp->set_requests_rejected(s.requests_rejected);
  resp->set_requests_finished(s.requests_finished);
  resp->set_requests_running(s.requests_running);
  resp->set_requests_waiting(s.requests_waiting);
  for (const auto& [k, v] : s.finished_by_reason) (*resp->mutable_finished_by_reason())[k] = v;
  resp->set_prompt_tokens(s.prompt_tokens);
  resp->set_generation_tokens(s.generation_tokens);
  resp->set_steps(s.steps);
  resp->set_mean_step_s(s.mean_step_s);
  resp->set_mean_batch_tokens(s.mean_batch_tokens);
  resp->set_kv_blocks_total(s.kv_blocks_total);
  resp->set_kv_blocks_free(s.kv_blocks_free);
  resp->set_requests_nonfinite_logits(s.nonfinite_logits);
  resp->set_sequence_slots_total(s.seq_slots_total);
  resp->set_sequence_slots_free(s.seq_slots_free);
  const Engine& engine = loop->engine();
  v1::PrefetchStats* pf = resp->mutable_prefetch();
  pf->set_tier(engine.table_options().tier);
  pf->set_transfer(engine.table_options().transfer);
  pf->set_hot_cache_bytes(static_cast<int64_t>(engine.table_options().hot_cache_bytes));
  const OverlapStats o = engine.overlap_stats();
  pf->set_prefetch(o.layers.empty() ? false : o.prefetch);
  pf->set_step_s(o.step_s);
  pf->set_estimated_loss(o.estimated_loss());
  for (size_t i = 0; i < o.layers.size(); ++i) {
    const LayerOverlap& l = o.layers[i];
    v1::LayerOverlap* m = pf->add_layers();
    m->set_layer_id(l.layer_id);
    m->set_steps(static_cast<int64_t>(l.steps));
    m->set_rows_requested(static_cast<int64_t>(l.rows_requested));
    m->set_unique_rows(static_cast<int64_t>(l.unique_rows));
    m->set_bytes_moved(static_cast<int64_t>(l.bytes_moved));
    m->set_transfer_s(l.transfer_s);
    m->set_stall_s(l.stall_s);
    m->set_overlap(l.overlap());
    for (size_t b = 0; b < l.latency_buckets.size(); ++b) {
      m->add_latency_bucket_upper_us(b + 1 < LayerOverlap::kBucketsUs.size()
                                         ? LayerOverlap::kBucketsUs[b]
                                         : std::numeric_limits<double>::infinity());
      m->add_latency_bucket_counts(static_cast<int64_t>(l.latency_buckets[b]));
    }
    m->set_latency_mean_s(l.latency_mean_s());
    m->set_hot_hits(static_cast<int64_t>(l.hot_hits));
    m->set_hot_hit_rate(l.hot_hit_rate());
  }
  const GraphStats g = engine.graph_stats();
  v1::CudaGraphStats* cg = resp->mutable_cuda_graphs();
  cg->set_enabled(engine.cuda_graphs());
  cg->set_captures(static_cast<int64_t>(g.captures));
  cg->set_replays(static_cast<int64_t>(g.replays));
  cg->set_warmups(static_cast<int64_t>(g.warmups));
  cg->set_eager(static_cast<int64_t>(g.eager));
  cg->set_capture_failures(static_cast<int64_t>(g.capture_failures));
  cg->set_invalidations(static_cast<int64_t>(g.invalidations));
  cg->set_cached(g.cached);
  cg->set_capture_seconds(g.capture_s);
  const TierStats t = engine.tier_stats();
  pf->set_cache_hits(static_cast<int64_t>(t.cache_hits));
  pf->set_cache_misses(static_cast<int64_t>(t.cache_misses));
  pf->set_io_reads(static_cast<int64_t>(t.io_reads));
  pf->set_io_retries(static_cast<int64_t>(t.io_retries));
  return grpc::Status::OK;
}

}  // namespace engram
