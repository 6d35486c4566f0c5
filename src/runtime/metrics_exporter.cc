#include "runtime/metrics_exporter.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <limits>
#include <string_view>

#include "runtime/http_server.h"

namespace engram {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void AddValue(MetricFamily& f, double v, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) {
    m.counter.value = v;
  } else {
    m.gauge.value = v;
  }
  f.metric.push_back(std::move(m));
}

void AddHistogram(MetricFamily& f, const std::vector<double>& bounds,
                  const std::vector<uint64_t>& counts, double sum, uint64_t count,
                  std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.histogram.sample_count = count;
  m.histogram.sample_sum = sum;
  uint64_t cum = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cum += counts[i];
    ClientMetric::Bucket b;
    b.cumulative_count = cum;
    b.upper_bound = i < bounds.size() ? bounds[i] : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(b);
  }
  f.metric.push_back(std::move(m));
}

}  // namespace

class MetricsExporter::Collector {
 public:
  explicit Collector(const EngineLoop& loop) : loop_(loop) {}

  std::vector<MetricFamily> Collect() const {
    std::vector<MetricFamily> out;
    const ServingStats s = loop_.Stats();
    const Engine& engine = loop_.engine();
    // vLLM's labels on each serving metric: the served model and the engine index (one here).
    const std::vector<ClientMetric::Label> served = {{"model_name", loop_.model_name()},
                                                     {"engine", "0"}};
    auto gauge = [&](const char* name, const char* help, double v) {
      out.push_back(Family(name, help, MetricType::Gauge));
      AddValue(out.back(), v, served);
    };
    auto counter = [&](const char* name, const char* help, double v) {
      out.push_back(Family(name, help, MetricType::Counter));
      AddValue(out.back(), v, served);
    };
    auto histogram = [&](const char* name, const char* help, const Histogram& h) {
      out.push_back(Family(name, help, MetricType::Histogram));
      AddHistogram(out.back(), h.bounds, h.counts, h.sum, h.count, served);
    };

    // Scheduler state: the three gauges the Gateway API Inference Extension routes on.
    gauge("engram_num_requests_running", "Requests in the running batch.",
          static_cast<double>(s.requests_running));
    gauge("engram_num_requests_waiting", "Requests queued for admission.",
          static_cast<double>(s.requests_waiting));
    gauge("engram_kv_cache_usage_perc",
          "KV-cache usage, 0..1: the blocks reserved for the running requests (each reserves "
          "prompt + max_tokens at admission) / all blocks.",
          KvCacheUsage(s));
    out.push_back(Family("engram_cache_config_info", "The KV cache's configuration (value 1).",
                         MetricType::Gauge));
    AddValue(out.back(), 1.0,
             {{"block_size", std::to_string(engine.kv_block_size())},
              {"enable_prefix_caching", "False"},
              {"engine", "0"},
              {"num_gpu_blocks", std::to_string(s.kv_blocks_total)}});
    gauge("engram_model_files_intact",
          "1 while the served model files are as mapped at start; 0 once one shrank or changed "
          "(the model then refuses requests until engramd restarts).",
          loop_.ModelHealth().ok() ? 1.0 : 0.0);

    counter("engram_num_preemptions_total",
            "Requests preempted: always 0 (a request reserves its whole KV at admission and is "
            "never preempted).",
            0.0);
    counter("engram_prompt_tokens_total", "Prompt tokens run through the model (prefill).",
            static_cast<double>(s.prompt_tokens));
    counter("engram_generation_tokens_total", "Tokens generated.",
            static_cast<double>(s.generation_tokens));
    out.push_back(Family("engram_request_success_total",
                         "Requests finished, by finish reason (stop, length, abort, error).",
                         MetricType::Counter));
    for (const char* r : {"stop", "length", "cancelled", "error"}) {
      auto it = s.finished_by_reason.find(r);
      std::vector<ClientMetric::Label> l = served;
      l.push_back({"finished_reason", std::string_view(r) == "cancelled" ? "abort" : r});
      AddValue(out.back(), it == s.finished_by_reason.end() ? 0.0 : static_cast<double>(it->second),
               std::move(l));
    }
    counter("engram_requests_rejected_total",
            "Requests refused before admission (bad parameters, queue full, draining).",
            static_cast<double>(s.requests_rejected));
    counter("engram_requests_nonfinite_logits_total",
            "Requests ended with INTERNAL because their logits held NaN or Inf (never sampled "
            "from).",
            static_cast<double>(s.nonfinite_logits));

    histogram("engram_request_prompt_tokens", "Prompt tokens of each finished request.",
              s.request_prompt_tokens);
    histogram("engram_request_generation_tokens", "Tokens generated for each finished request.",
              s.request_generation_tokens);
    histogram("engram_request_params_max_tokens", "max_tokens of each finished request.",
              s.request_params_max_tokens);
    histogram("engram_iteration_tokens_total",
              "Tokens of each engine step: the prompt tokens it ran plus the tokens it generated.",
              s.iteration_tokens);
    histogram("engram_time_to_first_token_seconds", "Time from arrival to the first token.",
              s.time_to_first_token);
    histogram("engram_inter_token_latency_seconds", "Time between two tokens of a request.",
              s.inter_token_latency);
    histogram("engram_request_time_per_output_token_seconds",
              "Each finished request's decode time / (its tokens - 1).",
              s.request_time_per_output_token);
    histogram("engram_e2e_request_latency_seconds", "Time from arrival to finish.",
              s.e2e_request_latency);
    histogram("engram_request_queue_time_seconds", "Time from arrival to admission (waiting).",
              s.request_queue_time);
    histogram("engram_request_inference_time_seconds",
              "Time from admission to the last token (running).", s.request_inference_time);
    histogram("engram_request_prefill_time_seconds", "Time from admission to the first token.",
              s.request_prefill_time);
    histogram("engram_request_decode_time_seconds", "Time from the first to the last token.",
              s.request_decode_time);

    // Engram row traffic (dram / nvme tiers), per layer and tier: engramd's own.
    const std::string tier = engine.table_options().tier;
    const OverlapStats o = engine.overlap_stats();
    auto per_layer = [&](const char* name, const char* help, MetricType type, auto value) {
      out.push_back(Family(name, help, type));
      for (size_t i = 0; i < o.layers.size(); ++i) {
        AddValue(out.back(), value(o.layers[i]),
                 {{"layer", std::to_string(o.layers[i].layer_id)}, {"tier", tier}});
      }
    };
    per_layer("engram_rows_requested_total", "Engram rows the steps asked for.",
              MetricType::Counter, [](const LayerOverlap& l) { return double(l.rows_requested); });
    per_layer("engram_rows_unique_total", "Engram rows after deduplication across the batch.",
              MetricType::Counter, [](const LayerOverlap& l) { return double(l.unique_rows); });
    per_layer("engram_hot_cache_hits_total",
              "Unique Engram rows served by the device hot-row cache.", MetricType::Counter,
              [](const LayerOverlap& l) { return double(l.hot_hits); });
    per_layer("engram_hot_cache_hit_ratio", "Hot-row cache hits / unique rows.", MetricType::Gauge,
              [](const LayerOverlap& l) { return l.hot_hit_rate(); });
    per_layer("engram_row_bytes_moved_total", "Bytes of Engram rows moved from the tier.",
              MetricType::Counter, [](const LayerOverlap& l) { return double(l.bytes_moved); });
    per_layer("engram_prefetch_transfer_seconds_total", "Copy-thread time fetching rows.",
              MetricType::Counter, [](const LayerOverlap& l) { return l.transfer_s; });
    per_layer("engram_prefetch_stall_seconds_total", "Compute time spent waiting for rows.",
              MetricType::Counter, [](const LayerOverlap& l) { return l.stall_s; });
    per_layer("engram_prefetch_overlap_ratio", "1 - stall / transfer time.", MetricType::Gauge,
              [](const LayerOverlap& l) { return l.overlap(); });
    per_layer("engram_estimated_layer_loss",
              "This layer's stall time / step time (the layers sum to "
              "engram_estimated_throughput_loss).",
              MetricType::Gauge, [&o](const LayerOverlap& l) { return EstimatedLayerLoss(o, l); });
    out.push_back(Family("engram_prefetch_latency_seconds",
                         "Issue-to-ready latency of a layer's rows.", MetricType::Histogram));
    std::vector<double> bounds;  // seconds; the last bucket (+inf) is implied
    for (size_t b = 0; b + 1 < LayerOverlap::kBucketsUs.size(); ++b) {
      bounds.push_back(LayerOverlap::kBucketsUs[b] * 1e-6);
    }
    for (size_t i = 0; i < o.layers.size(); ++i) {
      const LayerOverlap& l = o.layers[i];
      std::vector<uint64_t> counts(l.latency_buckets.begin(), l.latency_buckets.end());
      AddHistogram(out.back(), bounds, counts, l.latency_sum_s, l.steps,
                   {{"layer", std::to_string(o.layers[i].layer_id)}, {"tier", tier}});
    }
    // engramd's own process-wide numbers: no served-model labels.
    auto plain_gauge = [&](const char* name, const char* help, double v) {
      out.push_back(Family(name, help, MetricType::Gauge));
      AddValue(out.back(), v);
    };
    auto plain_counter = [&](const char* name, const char* help, double v) {
      out.push_back(Family(name, help, MetricType::Counter));
      AddValue(out.back(), v);
    };
    const GraphStats g = engine.graph_stats();
    plain_counter("engram_cuda_graph_replays_total",
                  "Decode steps whose forward ran as a CUDA graph.",
                  static_cast<double>(g.replays));
    plain_counter("engram_cuda_graph_captures_total", "CUDA graphs captured and instantiated.",
                  static_cast<double>(g.captures));
    plain_counter("engram_cuda_graph_capture_failures_total",
                  "CUDA graph captures that failed (the shape then runs eagerly).",
                  static_cast<double>(g.capture_failures));
    plain_gauge("engram_estimated_throughput_loss",
                "Stall time / step time of the Engram row traffic.", o.estimated_loss());
    const TierStats ts = engine.tier_stats();
    plain_counter("engram_row_cache_hits_total", "NVMe tier DRAM row cache hits.",
                  static_cast<double>(ts.cache_hits));
    plain_counter("engram_row_cache_misses_total", "NVMe tier DRAM row cache misses.",
                  static_cast<double>(ts.cache_misses));
    plain_counter("engram_nvme_reads_total",
                  "io_uring reads the NVMe tier submitted (adjacent missed rows share one).",
                  static_cast<double>(ts.io_reads));
    plain_counter("engram_nvme_read_retries_total",
                  "NVMe tier reads resubmitted after a short read or a transient error.",
                  static_cast<double>(ts.io_retries));
    return out;
  }

 private:
  const EngineLoop& loop_;
};

std::string MetricsExporter::Render(const EngineLoop& loop) {
  return prometheus::TextSerializer().Serialize(Collector(loop).Collect());
}

MetricsExporter::~MetricsExporter() { server_.reset(); }

Result<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(const std::string& listen,
                                                                const EngineLoop& loop) {
  std::unique_ptr<MetricsExporter> m(new MetricsExporter());
  m->collector_ = std::make_unique<Collector>(loop);
  const Collector* collector = m->collector_.get();
  HttpServerOptions options;
  options.what = "metrics.listen";
  options.max_body_bytes = 4096;  // no route takes a body; a small one still gets its 405
  auto server = HttpServer::Start(
      listen,
      [collector](const HttpRequest& req) {
        HttpResponse r;
        if (req.path != "/metrics") {
          r.status = 404;
          r.body = "not found; try /metrics\n";
        } else if (req.method != "GET" && req.method != "HEAD") {
          r.status = 405;
          r.headers.emplace_back("Allow", "GET, HEAD");
          r.body = "method not allowed; GET or HEAD /metrics\n";
        } else {
          r.content_type = kPrometheusContentType;
          r.body = prometheus::TextSerializer().Serialize(collector->Collect());
        }
        return r;
      },
      options);
  if (!server.ok()) return server.status();
  m->server_ = std::move(server).value();
  m->port_ = m->server_->port();
  return m;
}

}  // namespace engram
