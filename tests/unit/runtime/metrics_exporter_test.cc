// MetricsExporter on an in-process EngineLoop: a malformed metrics.listen is a clear
// INVALID_ARGUMENT (it once threw from std::stoi), a good one serves the metrics, and the
// exposition has vLLM's names, labels and bucket bounds with numbers that agree with each
// other and with the requests that ran.
#include "runtime/metrics_exporter.h"

#include "../../support/loopback_http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "model/model_files.h"
#include "runtime/metrics_buckets.h"

namespace engram {
namespace {

std::unique_ptr<EngineLoop> MakeLoop(const std::string& model_name = "engram") {
  auto files = OpenModel("synth:tiny");
  EXPECT_TRUE(files.ok()) << files.status().ToString();
  EngineOptions opt;
  opt.max_seqs = 2;
  opt.kv_tokens = 1024;
  opt.backend.threads = 1;
  auto e = Engine::Create(std::move(files).value(), opt);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  ServingOptions so;
  so.model_name = model_name;
  return std::make_unique<EngineLoop>(std::move(e).value(), nullptr, so);
}

// The exposition's samples, "name{labels}" -> value, and each family's TYPE.
struct Exposition {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  // The le bounds of `family`'s buckets whose labels contain `labels`, +Inf left out.
  std::vector<double> Bounds(const std::string& family) const {
    std::vector<double> out;
    for (const auto& [k, v] : samples) {
      if (k.rfind(family + "_bucket{", 0) != 0) continue;
      const size_t le = k.find("le=\"");
      const std::string bound = k.substr(le + 4, k.find('"', le + 4) - le - 4);
      if (bound != "+Inf") out.push_back(std::strtod(bound.c_str(), nullptr));
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

Exposition Parse(const std::string& text) {
  Exposition x;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      const size_t sp = line.find(' ', 7);
      x.types[line.substr(7, sp - 7)] = line.substr(sp + 1);
    } else if (!line.empty() && line[0] != '#') {
      const size_t sp = line.rfind(' ');
      x.samples[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
    }
  }
  return x;
}

StreamEvent RunToEnd(const std::shared_ptr<RequestState>& r) {
  StreamEvent ev;
  while (r->Pop(&ev, std::chrono::seconds(30))) {
    if (ev.finish != FinishReason::kNone) return ev;
  }
  ADD_FAILURE() << "request never finished";
  return ev;
}

GenerationParams Params(std::vector<int32_t> prompt, int max_tokens) {
  GenerationParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

std::string Get(int port, const std::string& target) {
  return testing::Exchange(port, "GET " + target + " HTTP/1.0\r\n\r\n");
}

TEST(MetricsExporter, BadListenIsInvalidArgumentNotAThrow) {
  auto loop = MakeLoop();
  for (const char* listen : {"nohost", "127.0.0.1:99999", "127.0.0.1:abc", "256.0.0.1:0"}) {
    SCOPED_TRACE(listen);
    Result<std::unique_ptr<MetricsExporter>> m = Status();
    EXPECT_NO_THROW(m = MetricsExporter::Start(listen, *loop));
    ASSERT_FALSE(m.ok());
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(m.status().message().rfind(fmt::format("metrics.listen: \"{}\"", listen), 0), 0u)
        << m.status().message();
  }
}

TEST(MetricsExporter, ServesMetricsOnAnEphemeralPort) {
  auto loop = MakeLoop();
  auto m = MetricsExporter::Start("127.0.0.1:0", *loop);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_GT((*m)->port(), 0);
  const std::string r = Get((*m)->port(), "/metrics");
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u) << r.substr(0, 200);
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  EXPECT_NE(r.find("engram_generation_tokens_total{model_name=\"engram\",engine=\"0\"} 0"),
            std::string::npos)
      << r;
  EXPECT_EQ(Get((*m)->port(), "/metrics/").rfind("HTTP/1.1 404", 0), 0u);
}

TEST(MetricsExporter, ServingMetricsHaveVllmNamesLabelsAndBuckets) {
  auto loop = MakeLoop("tiny \"served\"");
  const std::string L = "{model_name=\"tiny \\\"served\\\"\",engine=\"0\"";  // escaped
  auto a = loop->Submit("a", Params({5, 6, 7, 8}, 6), std::nullopt);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(RunToEnd(*a).finish, FinishReason::kLength);

  // A long request holds its KV reservation while it runs: the usage gauge says so.
  auto b = loop->Submit("b", Params({9, 10, 11}, 400), std::nullopt);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  StreamEvent first;
  ASSERT_TRUE((*b)->Pop(&first, std::chrono::seconds(30)));
  const Exposition running = Parse(MetricsExporter::Render(*loop));
  EXPECT_EQ(running.samples.at("engram_num_requests_running" + L + "}"), 1);
  EXPECT_EQ(running.samples.at("engram_num_requests_waiting" + L + "}"), 0);
  const double usage = running.samples.at("engram_kv_cache_usage_perc" + L + "}");
  EXPECT_GT(usage, 0);
  EXPECT_LE(usage, 1);
  (*b)->RequestCancel();
  EXPECT_EQ(RunToEnd(*b).finish, FinishReason::kCancelled);
  for (int i = 0; i < 300 && loop->InFlight() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  const Exposition x = Parse(MetricsExporter::Render(*loop));
  const auto at = [&](const std::string& name, const std::string& extra = "") {
    const std::string key = name + L + extra + "}";
    EXPECT_TRUE(x.samples.count(key)) << key;
    return x.samples.count(key) ? x.samples.at(key) : -1.0;
  };
  // The Gateway API Inference Extension's three gauges, and the counters.
  EXPECT_EQ(x.types.at("engram_num_requests_waiting"), "gauge");
  EXPECT_EQ(at("engram_num_requests_running"), 0);
  EXPECT_EQ(at("engram_kv_cache_usage_perc"), 0);
  EXPECT_EQ(x.types.at("engram_prompt_tokens_total"), "counter");
  EXPECT_EQ(at("engram_prompt_tokens_total"), 7);
  const double generated = at("engram_generation_tokens_total");
  EXPECT_GE(generated, 7);  // 6 + at least the one token b streamed
  EXPECT_EQ(at("engram_request_success_total", ",finished_reason=\"length\""), 1);
  EXPECT_EQ(at("engram_request_success_total", ",finished_reason=\"abort\""), 1);
  EXPECT_EQ(at("engram_request_success_total", ",finished_reason=\"stop\""), 0);
  EXPECT_EQ(at("engram_num_preemptions_total"), 0);

  // Per-request histograms: one observation per finished request, sums that add up.
  EXPECT_EQ(at("engram_request_prompt_tokens_count"), 2);
  EXPECT_EQ(at("engram_request_prompt_tokens_sum"), 7);
  EXPECT_EQ(at("engram_request_generation_tokens_sum"), generated);
  EXPECT_EQ(at("engram_request_params_max_tokens_sum"), 406);
  EXPECT_EQ(at("engram_iteration_tokens_total_sum"), 7 + generated);
  EXPECT_EQ(at("engram_time_to_first_token_seconds_count"), 2);
  EXPECT_EQ(at("engram_inter_token_latency_seconds_count"), generated - 2);
  for (const char* h :
       {"e2e_request_latency", "request_queue_time", "request_inference_time",
        "request_prefill_time", "request_decode_time", "request_time_per_output_token"}) {
    EXPECT_EQ(at(std::string("engram_") + h + "_seconds_count"), 2) << h;
  }
  // inference = prefill + decode; e2e covers queue + inference.
  EXPECT_NEAR(
      at("engram_request_inference_time_seconds_sum"),
      at("engram_request_prefill_time_seconds_sum") + at("engram_request_decode_time_seconds_sum"),
      1e-6);
  EXPECT_GE(at("engram_e2e_request_latency_seconds_sum") + 1e-9,
            at("engram_request_queue_time_seconds_sum") +
                at("engram_request_inference_time_seconds_sum"));
  // A bucket's count is cumulative and ends at _count.
  EXPECT_EQ(at("engram_request_prompt_tokens_bucket", ",le=\"+Inf\""), 2);

  // vLLM's bounds, family by family.
  const int64_t context = loop->config().max_position_embeddings;
  const std::map<std::string, std::vector<double>> want = {
      {"engram_time_to_first_token_seconds", vllm_buckets::TimeToFirstToken()},
      {"engram_inter_token_latency_seconds", vllm_buckets::TimePerOutputToken()},
      {"engram_request_time_per_output_token_seconds", vllm_buckets::TimePerOutputToken()},
      {"engram_e2e_request_latency_seconds", vllm_buckets::RequestLatency()},
      {"engram_request_queue_time_seconds", vllm_buckets::RequestLatency()},
      {"engram_request_inference_time_seconds", vllm_buckets::RequestLatency()},
      {"engram_request_prefill_time_seconds", vllm_buckets::RequestLatency()},
      {"engram_request_decode_time_seconds", vllm_buckets::RequestLatency()},
      {"engram_iteration_tokens_total", vllm_buckets::IterationTokens()},
      {"engram_request_prompt_tokens", vllm_buckets::OneTwoFive(context)},
      {"engram_request_generation_tokens", vllm_buckets::OneTwoFive(context)},
      {"engram_request_params_max_tokens", vllm_buckets::OneTwoFive(context)},
  };
  for (const auto& [family, bounds] : want) {
    EXPECT_EQ(x.types.at(family), "histogram") << family;
    EXPECT_EQ(x.Bounds(family), bounds) << family;
  }
  EXPECT_EQ(vllm_buckets::TimeToFirstToken().back(), 2560.0);
  EXPECT_EQ(vllm_buckets::OneTwoFive(1000),
            (std::vector<double>{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}));
  EXPECT_EQ(vllm_buckets::OneTwoFive(4096),
            (std::vector<double>{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}));
  EXPECT_TRUE(vllm_buckets::OneTwoFive(0).empty());
}

}  // namespace
}  // namespace engram
