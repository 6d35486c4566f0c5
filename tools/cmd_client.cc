// engram generate --server / engram stats: the gRPC client commands of a running engramd.
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "client.h"
#include "commands.h"
#include "engine_args.h"

namespace engram::cli {
namespace {

constexpr const char* kGenerateUsage =
    "engram generate --server HOST:PORT (--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens N]\n"
    "                [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop S]...\n"
    "                [--ignore-eos] [--timeout-s X]\n"
    "  Streams the generated text to stdout as it arrives; the finish reason and usage go to\n"
    "  stderr. Exit 1 with the gRPC status when the call fails.\n"
    "  With TLS or API keys on the daemon: --api-key KEY (or ENGRAM_API_KEY), --tls-ca PEM,\n"
    "  --tls-cert PEM --tls-key PEM (mutual TLS), --tls-server-name NAME.\n";

constexpr const char* kStatsUsage =
    "engram stats --server HOST:PORT [--json] [--timeout-s X]\n"
    "  Prints the daemon's model (GetModelInfo) and serving statistics (GetStats).\n"
    "  Security options as for generate --server.\n";

Result<v1::GenerateRequest> BuildRequest(const Args& args, const std::vector<std::string>& stops) {
  v1::GenerateRequest req;
  if (args.Has("prompt") == args.Has("prompt-ids")) {
    return InvalidArgument("give exactly one of --prompt TEXT and --prompt-ids 1,2,3");
  }
  if (args.Has("prompt")) {
    req.set_text(*args.Get("prompt"));
  } else {
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int32_t> ids, GetTokenIds(args, "prompt-ids"));
    for (int32_t t : ids) req.mutable_token_ids()->add_ids(t);
  }
  ENGRAM_ASSIGN_OR_RETURN(long long max_tokens, args.GetInt("max-tokens", 0));
  ENGRAM_ASSIGN_OR_RETURN(double temperature, args.GetDouble("temperature", 0.0));
  ENGRAM_ASSIGN_OR_RETURN(long long top_k, args.GetInt("top-k", 0));
  ENGRAM_ASSIGN_OR_RETURN(double top_p, args.GetDouble("top-p", 0.0));
  if (max_tokens < 0 || max_tokens > INT32_MAX) {
    return InvalidArgument("--max-tokens {} must be in [0, {}] (0: the server's default)",
                           max_tokens, INT32_MAX);
  }
  if (top_k < INT32_MIN || top_k > INT32_MAX)
    return InvalidArgument("--top-k {} is too large", top_k);
  // Range checks of the sampling values are the server's: it names the field and the limit.
  req.set_max_tokens(static_cast<int32_t>(max_tokens));
  v1::SamplingParams* s = req.mutable_sampling();
  s->set_temperature(static_cast<float>(temperature));
  s->set_top_k(static_cast<int32_t>(top_k));
  s->set_top_p(static_cast<float>(top_p));
  if (args.Has("seed")) {
    ENGRAM_ASSIGN_OR_RETURN(long long seed, args.GetInt("seed", 0));
    s->set_seed(static_cast<uint64_t>(seed));
  }
  for (const std::string& stop : stops) req.add_stop(stop);
  req.set_ignore_eos(args.Flag("ignore-eos"));
  return req;
}

Status GenerateClient(const std::string& server, const ClientSecurity& security, double timeout_s,
                      const v1::GenerateRequest& req) {
  auto channel = MakeChannel(server, security);
  auto stub = v1::Engram::NewStub(channel);
  grpc::ClientContext ctx;
  SetTimeout(&ctx, timeout_s);
  auto reader = stub->Generate(&ctx, req);
  v1::GenerateResponse msg;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  bool have_usage = false;
  int64_t tokens = 0;
  bool wrote_text = false;
  while (reader->Read(&msg)) {
    tokens += msg.token_ids_size();
    if (!msg.text().empty()) {
      std::fwrite(msg.text().data(), 1, msg.text().size(), stdout);
      std::fflush(stdout);
      wrote_text = true;
    }
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) finish = msg.finish_reason();
    if (msg.has_usage()) {
      usage = msg.usage();
      have_usage = true;
    }
  }
  const grpc::Status st = reader->Finish();
  if (wrote_text) {
    std::printf("\n");
    std::fflush(stdout);
  }
  if (have_usage) {
    const double decode_s = usage.total_time_s() - usage.time_to_first_token_s();
    const int completion = usage.completion_tokens();
    std::fprintf(stderr,
                 "finish: %s; prompt %d tokens, completion %d tokens; TTFT %.3f s; total %.3f s; "
                 "%.1f tok/s (decode %.1f tok/s)\n",
                 FinishName(finish), usage.prompt_tokens(), completion,
                 usage.time_to_first_token_s(), usage.total_time_s(),
                 usage.total_time_s() > 0 ? completion / usage.total_time_s() : 0.0,
                 completion > 1 && decode_s > 0 ? (completion - 1) / decode_s : 0.0);
  }
  if (!st.ok()) {
    if (tokens == 0) return FromGrpc(st);
    return FromGrpc(st).WithContext(
        fmt::format("the stream ended after {} tokens", static_cast<long long>(tokens)));
  }
  return Status::Ok();
}

// "  key                 value" lines with the keys padded to one width.
class Table {
 public:
  void Row(std::string key, std::string value) {
    rows_.emplace_back(std::move(key), std::move(value));
  }
  void Print(const char* title) const {
    size_t w = 0;
    for (const auto& [k, v] : rows_) w = std::max(w, k.size());
    std::printf("%s\n", title);
    for (const auto& [k, v] : rows_) {
      std::printf("  %-*s  %s\n", static_cast<int>(w), k.c_str(), v.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::string>> rows_;
};

std::string JoinInts(const auto& values) {
  std::string s;
  for (const auto& v : values) s += (s.empty() ? "" : ", ") + std::to_string(v);
  return s;
}

std::string Bytes(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f} GB", static_cast<double>(n) / 1e9);
  return fmt::format("{:.2f} MB", static_cast<double>(n) / 1e6);
}

void PrintModelInfo(const v1::ModelInfo& m) {
  Table t;
  t.Row("source", m.source());
  t.Row("architecture", m.architecture());
  t.Row("backend", m.backend());
  t.Row("layers", std::to_string(m.num_layers()));
  t.Row("hidden size", std::to_string(m.hidden_size()));
  t.Row("heads (kv)", fmt::format("{} ({}), head_dim {}", m.num_attention_heads(),
                                  m.num_key_value_heads(), m.head_dim()));
  if (!m.weights().empty()) t.Row("weights", m.weights());
  t.Row("vocab size", std::to_string(m.vocab_size()));
  t.Row("max context", std::to_string(m.max_context()));
  t.Row("tokenizer", m.has_tokenizer() ? "yes" : "no (token-id prompts only)");
  t.Row("eos token ids", JoinInts(m.eos_token_ids()));
  if (m.has_engram()) {
    const v1::EngramInfo& e = m.engram();
    t.Row("engram layers", JoinInts(e.layer_ids()));
    const int heads = std::max(1, e.n_head_per_ngram());
    t.Row("engram module", e.variant() == "v41"
                               ? "DeepSeek-V4.1 (fused wkv, no short conv)"
                               : fmt::format("paper (conv kernel {})", e.kernel_size()));
    t.Row("engram n-gram", fmt::format("max {}, {} heads of {} values per order",
                                       e.max_ngram_size(), heads, e.n_embed_per_ngram() / heads));
    if (!e.row_dtype().empty()) {
      t.Row("engram rows",
            fmt::format("{}, {} B each{}", e.row_dtype(), e.row_bytes(),
                        e.row_dtype() == "F8_E4M3" ? " (E8M0 scales included)" : ""));
    }
    t.Row("engram vocab", fmt::format("{} compressed ids", e.compressed_vocab_size()));
    t.Row("engram table rows", JoinInts(e.table_rows()));
    t.Row("engram table size", Bytes(e.table_bytes()));
  }
  for (const v1::TierInfo& tier : m.tiers()) {
    t.Row("tier " + tier.name(),
          Bytes(tier.used_bytes()) + " used of " + Bytes(tier.capacity_bytes()));
  }
  t.Print("model");
}

// The prefetch-overlap section: one row per Engram layer.
void PrintOverlap(const v1::PrefetchStats& p) {
  std::printf("engram rows (tier %s, %s%s%s)\n", p.tier().c_str(),
              p.tier() == "resident" ? "gathered from the backend's own copy"
              : p.prefetch()         ? "prefetched on the copy thread"
                                     : "read synchronously at the layer",
              p.tier() == "resident" ? "" : ", transfer ",
              p.tier() == "resident" ? "" : p.transfer().c_str());
  if (p.layers_size() == 0) return;
  std::printf("  %-6s %8s %12s %12s %12s %11s %10s %8s %10s\n", "layer", "steps", "rows", "unique",
              "bytes", "transfer s", "stall s", "overlap", "mean lat");
  for (const v1::LayerOverlap& l : p.layers()) {
    std::printf("  %-6d %8lld %12lld %12lld %12s %11.4f %10.4f %7.1f%% %8.1fus\n", l.layer_id(),
                static_cast<long long>(l.steps()), static_cast<long long>(l.rows_requested()),
                static_cast<long long>(l.unique_rows()), Bytes(l.bytes_moved()).c_str(),
                l.transfer_s(), l.stall_s(), 100 * l.overlap(), l.latency_mean_s() * 1e6);
  }
  if (p.hot_cache_bytes() > 0) {
    std::printf("  device hot-row cache %s:", Bytes(p.hot_cache_bytes()).c_str());
    for (const v1::LayerOverlap& l : p.layers()) {
      std::printf(" layer %d hit rate %.1f%%", l.layer_id(), 100 * l.hot_hit_rate());
    }
    std::printf("\n");
  }
  std::printf("  estimated throughput loss %.2f%% (stall / step time over %.3f s of steps)\n",
              100 * p.estimated_loss(), p.step_s());
  if (p.tier() == "nvme") {
    const double total = static_cast<double>(p.cache_hits() + p.cache_misses());
    std::printf(
        "  row cache hits %lld, misses %lld (hit rate %.1f%%); io reads %lld, retries %lld\n",
        static_cast<long long>(p.cache_hits()), static_cast<long long>(p.cache_misses()),
        total > 0 ? 100 * p.cache_hits() / total : 0.0, static_cast<long long>(p.io_reads()),
        static_cast<long long>(p.io_retries()));
  }
}

void PrintStats(const v1::Stats& s) {
  Table t;
  t.Row("uptime", fmt::format("{:.1f} s", s.uptime_s()));
  t.Row("requests received", std::to_string(s.requests_received()));
  t.Row("requests rejected", std::to_string(s.requests_rejected()));
  t.Row("requests running", std::to_string(s.requests_running()));
  t.Row("requests waiting", std::to_string(s.requests_waiting()));
  t.Row("requests finished", std::to_string(s.requests_finished()));
  std::vector<std::pair<std::string, int64_t>> reasons(s.finished_by_reason().begin(),
                                                       s.finished_by_reason().end());
  std::sort(reasons.begin(), reasons.end());
  for (const auto& [reason, n] : reasons) t.Row("  finished " + reason, std::to_string(n));
  t.Row("prompt tokens", std::to_string(s.prompt_tokens()));
  t.Row("generated tokens", std::to_string(s.generation_tokens()));
  t.Row("engine steps", std::to_string(s.steps()));
  t.Row("mean step", fmt::format("{:.3f} ms", s.mean_step_s() * 1e3));
  t.Row("mean batch", fmt::format("{:.1f} tokens", s.mean_batch_tokens()));
  if (s.cuda_graphs().enabled()) {
    const v1::CudaGraphStats& g = s.cuda_graphs();
    t.Row(
        "cuda graphs",
        fmt::format("{} steps replayed, {} captured in {:.1f} ms, {} failed, {} held", g.replays(),
                    g.captures(), g.capture_seconds() * 1e3, g.capture_failures(), g.cached()));
  }
  t.Row("KV blocks free/total", fmt::format("{} / {}", s.kv_blocks_free(), s.kv_blocks_total()));
  t.Row("sequence slots free/total",
        fmt::format("{} / {}", s.sequence_slots_free(), s.sequence_slots_total()));
  t.Print("stats");
  PrintOverlap(s.prefetch());
}

Status StatsClient(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(std::string server, args.Require("server"));
  ENGRAM_ASSIGN_OR_RETURN(double timeout_s, args.GetDouble("timeout-s", 10.0));
  ENGRAM_ASSIGN_OR_RETURN(ClientSecurity security, ClientSecurityFromArgs(args));
  auto stub = v1::Engram::NewStub(MakeChannel(server, security));
  ENGRAM_ASSIGN_OR_RETURN(v1::ModelInfo info, FetchModelInfo(*stub, timeout_s));
  grpc::ClientContext ctx;
  SetTimeout(&ctx, timeout_s);
  v1::Stats stats;
  if (grpc::Status st = stub->GetStats(&ctx, v1::GetStatsRequest(), &stats); !st.ok()) {
    return FromGrpc(st).WithContext("GetStats");
  }
  if (args.Flag("json")) {
    google::protobuf::util::JsonPrintOptions o;
    o.always_print_primitive_fields = true;
    o.preserve_proto_field_names = true;
    std::string info_json, stats_json;
    auto s1 = google::protobuf::util::MessageToJsonString(info, &info_json, o);
    auto s2 = google::protobuf::util::MessageToJsonString(stats, &stats_json, o);
    if (!s1.ok() || !s2.ok()) return Internal("cannot print the reply as JSON");
    std::printf("{\"model\": %s, \"stats\": %s}\n", info_json.c_str(), stats_json.c_str());
    return Status::Ok();
  }
  PrintModelInfo(info);
  PrintStats(stats);
  return Status::Ok();
}

}  // namespace

int RunGenerateClient(int argc, char** argv) {
  auto stops = TakeRepeated(&argc, argv, 2, "stop");
  if (!stops.ok()) return Fail("generate", stops.status()) + 1;
  auto args =
      Args::Parse(argc, argv, 2,
                  WithSecurityOptions({"server", "prompt", "prompt-ids", "max-tokens",
                                       "temperature", "top-k", "top-p", "seed", "timeout-s"}),
                  {"help", "ignore-eos"});
  if (!args.ok()) return Fail("generate", args.status()) + 1;
  if (args->Flag("help")) {
    std::fprintf(stderr, "%s", kGenerateUsage);
    return 0;
  }
  auto server = args->Require("server");
  auto timeout_s = args->GetDouble("timeout-s", 0.0);
  auto req = BuildRequest(*args, *stops);
  auto security = ClientSecurityFromArgs(*args);
  for (const Status& st : {server.status(), timeout_s.status(), req.status(), security.status()}) {
    if (!st.ok()) return Fail("generate", st) + 1;  // a usage error: exit 2
  }
  Status st = GenerateClient(*server, *security, *timeout_s, *req);
  return st.ok() ? 0 : Fail("generate", st);
}

int RunStats(int argc, char** argv) {
  auto args =
      Args::Parse(argc, argv, 2, WithSecurityOptions({"server", "timeout-s"}), {"help", "json"});
  if (!args.ok()) return Fail("stats", args.status()) + 1;
  if (args->Flag("help")) {
    std::fprintf(stderr, "%s", kStatsUsage);
    return 0;
  }
  Status st = StatsClient(*args);
  return st.ok() ? 0 : Fail("stats", st);
}

}  // namespace engram::cli
