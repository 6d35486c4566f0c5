// engram bench serve: load generator for a running engramd. N client threads issue M
// streaming Generate requests (or, with --http, streaming POST /v1/completions) in total (random
// token-id prompts from a fixed seed, ignore_eos so each makes exactly max_tokens), then prints
// throughput, TTFT and inter-token latency percentiles, and checks that every request ended: with a
// finish reason or a status.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "client.h"
#include "commands.h"
#include "engine_args.h"
#include "http_client.h"

namespace engram::cli {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "engram bench serve --server HOST:PORT [--concurrency N] [--requests M] [--prompt-len L]\n"
    "                   [--max-tokens T] [--seed S] [--timeout-s X] [--json]\n"
    "                   [--http URL [--http-api-key KEY] [--http-ca PEM]]\n"
    "  N client threads (default 1) send M requests (default 8) in total: token-id prompts of\n"
    "  L random ids (default 64, fixed seed) with ignore_eos and max_tokens T (default 32),\n"
    "  greedy. Prints output and total throughput, TTFT and inter-token latency p50/p99, and\n"
    "  checks started = finished + ended with a status. Exit 1 if a request was lost.\n"
    "  --http URL: the same requests go to the OpenAI-compatible front door at URL\n"
    "  (e.g. http://127.0.0.1:8000) as streamed POST /v1/completions with token-id prompts\n"
    "  and return_token_ids; model info and server stats still come from --server.\n"
    "  --api-key KEY (or ENGRAM_API_KEY), --tls-ca PEM, --tls-cert/--tls-key PEM,\n"
    "  --tls-server-name NAME: for a daemon with TLS or keys; the HTTP side uses the same key\n"
    "  and CA unless --http-api-key / --http-ca say otherwise.\n";

struct BenchConfig {
  std::string server;
  int concurrency = 1;
  int requests = 8;
  int prompt_len = 64;
  int max_tokens = 32;
  uint64_t seed = 0;
  double timeout_s = 600;
  bool json = false;
  HttpTarget http;  // base_url empty: gRPC
  ClientSecurity security;
};

// What one request saw, from the client's side.
struct Record {
  bool started = false;
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string message;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  int prompt_tokens = 0;
  int output_tokens = 0;      // token ids received
  double ttft_s = -1;         // call start -> first message carrying a token
  std::vector<double> itl_s;  // gaps between token messages, per token
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

const char* CodeName(grpc::StatusCode c) { return StatusCodeName(static_cast<StatusCode>(c)); }

std::vector<int32_t> MakePrompt(const BenchConfig& cfg, int index, int32_t vocab) {
  std::mt19937_64 rng(cfg.seed * 1000003ull + static_cast<uint64_t>(index));
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> ids(static_cast<size_t>(cfg.prompt_len));
  for (int32_t& t : ids) t = dist(rng);
  return ids;
}

Record RunOne(v1::Engram::Stub& stub, const BenchConfig& cfg, int index, int32_t vocab) {
  Record r;
  v1::GenerateRequest req;
  for (int32_t t : MakePrompt(cfg, index, vocab)) req.mutable_token_ids()->add_ids(t);
  req.set_max_tokens(cfg.max_tokens);
  req.set_ignore_eos(true);
  req.set_request_id("bench-" + std::to_string(index));
  r.prompt_tokens = cfg.prompt_len;
  grpc::ClientContext ctx;
  SetTimeout(&ctx, cfg.timeout_s);
  const auto t0 = Clock::now();
  r.started = true;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  auto last = t0;
  while (reader->Read(&msg)) {
    const auto now = Clock::now();
    const int n = msg.token_ids_size();
    if (n > 0) {
      if (r.ttft_s < 0) {
        r.ttft_s = std::chrono::duration<double>(now - t0).count();
      } else {
        const double gap = std::chrono::duration<double>(now - last).count() / n;
        for (int i = 0; i < n; ++i) r.itl_s.push_back(gap);
      }
      last = now;
      r.output_tokens += n;
    }
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) r.finish = msg.finish_reason();
  }
  const grpc::Status st = reader->Finish();
  r.code = st.error_code();
  r.message = st.error_message();
  return r;
}

// The gRPC status a failed HTTP request stands for, so both modes summarize alike.
grpc::StatusCode FromHttp(long status) {
  switch (status) {
    case 400:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case 401:
      return grpc::StatusCode::UNAUTHENTICATED;
    case 404:
      return grpc::StatusCode::NOT_FOUND;
    case 503:
      return grpc::StatusCode::UNAVAILABLE;
    case 504:
      return grpc::StatusCode::DEADLINE_EXCEEDED;
    default:
      return grpc::StatusCode::INTERNAL;
  }
}

Record RunOneHttp(HttpClient& client, const BenchConfig& cfg, int index, int32_t vocab) {
  Record r;
  const std::vector<int32_t> prompt = MakePrompt(cfg, index, vocab);
  nlohmann::json body = {{"prompt", prompt},   {"max_tokens", cfg.max_tokens},
                         {"ignore_eos", true}, {"temperature", 0},
                         {"stream", true},     {"return_token_ids", true}};
  r.prompt_tokens = cfg.prompt_len;
  const auto t0 = Clock::now();
  r.started = true;
  auto last = t0;
  bool stream_error = false;
  auto on_event = [&](const std::string& data) {
    if (data == "[DONE]") return;
    const nlohmann::json ev = nlohmann::json::parse(data, nullptr, false);
    if (!ev.is_object()) return;
    if (ev.contains("error")) {
      stream_error = true;
      r.code = grpc::StatusCode::INTERNAL;
      r.message = ev["error"].value("message", std::string("error event"));
      return;
    }
    const auto now = Clock::now();
    for (const nlohmann::json& c : ev.value("choices", nlohmann::json::array())) {
      const int n = c.contains("token_ids") ? static_cast<int>(c["token_ids"].size()) : 0;
      if (n > 0) {
        if (r.ttft_s < 0) {
          r.ttft_s = std::chrono::duration<double>(now - t0).count();
        } else {
          const double gap = std::chrono::duration<double>(now - last).count() / n;
          for (int i = 0; i < n; ++i) r.itl_s.push_back(gap);
        }
        last = now;
        r.output_tokens += n;
      }
      if (c.contains("finish_reason") && c["finish_reason"].is_string()) {
        const std::string f = c["finish_reason"];
        r.finish = f == "length" ? v1::FINISH_REASON_LENGTH
                   : f == "stop" ? v1::FINISH_REASON_STOP
                                 : v1::FINISH_REASON_CANCELLED;
      }
    }
  };
  long status = 0;
  std::string reply;
  const Status st = client.Post("/v1/completions", body.dump(), &status, &reply, on_event);
  if (!st.ok()) {
    r.code = grpc::StatusCode::UNAVAILABLE;
    r.message = st.message();
  } else if (status != 200) {
    r.code = FromHttp(status);
    const nlohmann::json err = nlohmann::json::parse(reply, nullptr, false);
    r.message = fmt::format("HTTP {}: {}", status,
                            err.is_object() && err.contains("error")
                                ? err["error"].value("message", std::string())
                                : reply.substr(0, 200));
  } else if (!stream_error && r.finish == v1::FINISH_REASON_UNSPECIFIED) {
    r.code = grpc::StatusCode::UNAVAILABLE;
    r.message = "the event stream ended without a finish reason";
  }
  return r;
}

Status Bench(const BenchConfig& cfg) {
  auto channel = MakeChannel(cfg.server, cfg.security);
  ENGRAM_RETURN_IF_ERROR(WaitConnected(*channel, cfg.server, 10));
  auto stub = v1::Engram::NewStub(channel);
  ENGRAM_ASSIGN_OR_RETURN(v1::ModelInfo info, FetchModelInfo(*stub, 30));
  if (info.vocab_size() < 1) return FailedPrecondition("the server reports vocab_size 0");
  if (cfg.prompt_len + cfg.max_tokens > info.max_context()) {
    return InvalidArgument("--prompt-len {} + --max-tokens {} exceeds the model's context of {}",
                           cfg.prompt_len, cfg.max_tokens, info.max_context());
  }
  auto fetch_stats = [&]() -> Result<v1::Stats> {
    grpc::ClientContext ctx;
    SetTimeout(&ctx, 30);
    v1::Stats s;
    if (grpc::Status st = stub->GetStats(&ctx, v1::GetStatsRequest(), &s); !st.ok()) {
      return FromGrpc(st).WithContext("GetStats");
    }
    return s;
  };
  ENGRAM_ASSIGN_OR_RETURN(v1::Stats before, fetch_stats());

  // One channel per client thread: separate HTTP/2 connections, as separate clients would be.
  std::vector<Record> records(static_cast<size_t>(cfg.requests));
  std::atomic<int> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < cfg.concurrency; ++c) {
    threads.emplace_back([&] {
      auto my_stub = v1::Engram::NewStub(MakeChannel(cfg.server, cfg.security));
      std::unique_ptr<HttpClient> http;  // one connection per client thread, kept alive
      if (!cfg.http.base_url.empty()) http = std::make_unique<HttpClient>(cfg.http);
      for (int i = next.fetch_add(1); i < cfg.requests; i = next.fetch_add(1)) {
        records[static_cast<size_t>(i)] = http ? RunOneHttp(*http, cfg, i, info.vocab_size())
                                               : RunOne(*my_stub, cfg, i, info.vocab_size());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  ENGRAM_ASSIGN_OR_RETURN(v1::Stats after, fetch_stats());

  int started = 0, finished = 0, failed = 0, short_outputs = 0;
  int64_t out_tokens = 0, prompt_tokens = 0;
  std::map<std::string, int> statuses, finishes;
  std::map<std::string, std::string> first_message;  // status -> one example message
  std::vector<double> ttft, itl;
  for (const Record& r : records) {
    if (!r.started) continue;
    ++started;
    out_tokens += r.output_tokens;
    ++statuses[CodeName(r.code)];
    if (r.code == grpc::StatusCode::OK && r.finish != v1::FINISH_REASON_UNSPECIFIED) {
      ++finished;
      ++finishes[FinishName(r.finish)];
      prompt_tokens += r.prompt_tokens;
      if (r.output_tokens != cfg.max_tokens) ++short_outputs;
    } else if (r.code != grpc::StatusCode::OK) {
      ++failed;
      first_message.emplace(CodeName(r.code), r.message);
    }
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
  }
  const int lost = started - finished - failed;
  const int64_t steps = after.steps() - before.steps();
  const double batch_tokens = after.mean_batch_tokens() * static_cast<double>(after.steps()) -
                              before.mean_batch_tokens() * static_cast<double>(before.steps());
  const double step_s = after.mean_step_s() * static_cast<double>(after.steps()) -
                        before.mean_step_s() * static_cast<double>(before.steps());
  const double out_tps = static_cast<double>(out_tokens) / wall_s;
  const double total_tps = static_cast<double>(out_tokens + prompt_tokens) / wall_s;

  if (cfg.json) {
    nlohmann::json j;
    j["server"] = cfg.server;
    j["protocol"] = cfg.http.base_url.empty() ? "grpc" : "http";
    if (!cfg.http.base_url.empty()) j["http"] = cfg.http.base_url;
    j["model"] = info.source();
    j["backend"] = info.backend();
    j["concurrency"] = cfg.concurrency;
    j["requests"] = cfg.requests;
    j["prompt_len"] = cfg.prompt_len;
    j["max_tokens"] = cfg.max_tokens;
    j["started"] = started;
    j["finished"] = finished;
    j["ended_with_status"] = failed;
    j["lost"] = lost;
    j["short_outputs"] = short_outputs;
    j["statuses"] = statuses;
    j["status_messages"] = first_message;
    j["finish_reasons"] = finishes;
    j["wall_s"] = wall_s;
    j["output_tok_s"] = out_tps;
    j["total_tok_s"] = total_tps;
    j["ttft_p50_s"] = Percentile(ttft, 50);
    j["ttft_p99_s"] = Percentile(ttft, 99);
    j["itl_p50_s"] = Percentile(itl, 50);
    j["itl_p99_s"] = Percentile(itl, 99);
    j["server_steps"] = steps;
    j["server_mean_batch_tokens"] = steps > 0 ? batch_tokens / static_cast<double>(steps) : 0.0;
    j["server_mean_step_s"] = steps > 0 ? step_s / static_cast<double>(steps) : 0.0;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "bench serve: %s, model %s on %s (vocab %d)\n",
        cfg.http.base_url.empty() ? cfg.server.c_str() : (cfg.http.base_url + " (HTTP)").c_str(),
        info.source().c_str(), info.backend().c_str(), info.vocab_size());
    std::printf("  load        concurrency %d, %d requests, prompt %d tokens, max_tokens %d\n",
                cfg.concurrency, cfg.requests, cfg.prompt_len, cfg.max_tokens);
    std::printf("  requests    started %d = finished %d + ended with a status %d  (lost %d)%s\n",
                started, finished, failed, lost, lost ? "  <-- LOST REQUESTS" : "");
    std::string s;
    for (const auto& [k, v] : statuses) s += fmt::format("{}{} {}", s.empty() ? "" : ", ", k, v);
    std::printf("  statuses    %s\n", s.c_str());
    s.clear();
    for (const auto& [k, v] : finishes) s += fmt::format("{}{} {}", s.empty() ? "" : ", ", k, v);
    std::printf(
        "  finished    %s%s\n", s.empty() ? "none" : s.c_str(),
        short_outputs
            ? fmt::format(" ({} with fewer than {} tokens)", short_outputs, cfg.max_tokens).c_str()
            : "");
    for (const auto& [k, v] : first_message) std::printf("  %-11s %s\n", k.c_str(), v.c_str());
    std::printf("  wall        %.3f s\n", wall_s);
    std::printf("  throughput  output %.1f tok/s, total %.1f tok/s (prompt + output), %.2f req/s\n",
                out_tps, total_tps, finished / wall_s);
    std::printf("  TTFT        p50 %.1f ms, p99 %.1f ms\n", Percentile(ttft, 50) * 1e3,
                Percentile(ttft, 99) * 1e3);
    std::printf("  ITL         p50 %.1f ms, p99 %.1f ms\n", Percentile(itl, 50) * 1e3,
                Percentile(itl, 99) * 1e3);
    std::printf("  server      %lld steps, mean batch %.1f tokens, mean step %.1f ms\n",
                static_cast<long long>(steps),
                steps > 0 ? batch_tokens / static_cast<double>(steps) : 0.0,
                steps > 0 ? step_s / static_cast<double>(steps) * 1e3 : 0.0);
  }
  if (lost > 0)
    return Internal("{} of {} requests ended with neither a finish reason nor a status", lost,
                    started);
  if (finished == 0) return Unavailable("no request finished");
  return Status::Ok();
}

Result<BenchConfig> ParseConfig(const Args& args) {
  BenchConfig c;
  ENGRAM_ASSIGN_OR_RETURN(c.server, args.Require("server"));
  ENGRAM_ASSIGN_OR_RETURN(long long conc, args.GetInt("concurrency", 1));
  ENGRAM_ASSIGN_OR_RETURN(long long reqs, args.GetInt("requests", 8));
  ENGRAM_ASSIGN_OR_RETURN(long long plen, args.GetInt("prompt-len", 64));
  ENGRAM_ASSIGN_OR_RETURN(long long maxt, args.GetInt("max-tokens", 32));
  ENGRAM_ASSIGN_OR_RETURN(long long seed, args.GetInt("seed", 0));
  ENGRAM_ASSIGN_OR_RETURN(c.timeout_s, args.GetDouble("timeout-s", 600));
  if (conc < 1 || conc > 4096)
    return InvalidArgument("--concurrency {} must be in [1, 4096]", conc);
  if (reqs < 1 || reqs > 1000000) return InvalidArgument("--requests {} must be in [1, 1e6]", reqs);
  if (plen < 1 || plen > INT32_MAX) return InvalidArgument("--prompt-len {} must be >= 1", plen);
  if (maxt < 1 || maxt > INT32_MAX) return InvalidArgument("--max-tokens {} must be >= 1", maxt);
  c.concurrency = static_cast<int>(std::min(conc, reqs));
  c.requests = static_cast<int>(reqs);
  c.prompt_len = static_cast<int>(plen);
  c.max_tokens = static_cast<int>(maxt);
  c.seed = static_cast<uint64_t>(seed);
  c.json = args.Flag("json");
  c.http.base_url = args.Get("http").value_or("");
  ENGRAM_ASSIGN_OR_RETURN(c.security, ClientSecurityFromArgs(args));
  c.http.api_key = args.Get("http-api-key").value_or(c.security.api_key);
  c.http.ca_file = args.Get("http-ca").value_or(c.security.ca_path);
  c.http.timeout_s = c.timeout_s;
  if (!c.http.base_url.empty() && c.http.base_url.rfind("http://", 0) != 0 &&
      c.http.base_url.rfind("https://", 0) != 0) {
    return InvalidArgument("--http {} must start with http:// or https://", c.http.base_url);
  }
  return c;
}

}  // namespace

int RunBenchServe(int argc, char** argv) {
  // argv: engram bench serve [options]
  auto args = Args::Parse(argc, argv, 3,
                          {"server", "concurrency", "requests", "prompt-len", "max-tokens", "seed",
                           "timeout-s", "http", "http-api-key", "http-ca"},
                          {"help", "json"});
  if (!args.ok()) return Fail("bench serve", args.status()) + 1;
  if (args->Flag("help")) {
    std::fprintf(stderr, "%s", kUsage);
    return 0;
  }
  auto cfg = ParseConfig(*args);
  if (!cfg.ok()) return Fail("bench serve", cfg.status()) + 1;
  Status st = Bench(*cfg);
  return st.ok() ? 0 : Fail("bench serve", st);
}

}  // namespace engram::cli
