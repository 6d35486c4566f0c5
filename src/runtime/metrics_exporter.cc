#include "runtime/metrics_exporter.h"

#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>

#include <limits>

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

void AddHistogram(MetricFamily& f, const Histogram& h) {
  AddHistogram(f, h.bounds, h.counts, h.sum, h.count);
}

}  // namespace

class MetricsExporter::Collector {
 public:
  explicit Collector(const EngineLoop& loop) : loop_(loop) {}

  std::vector<MetricFamily> Collect() const {
    std::vector<MetricFamily> out;
    const ServingStats s = loop_.Stats();
    auto gauge = [&](const char* name, const char* help, double v) {
      out.push_back(Family(name, help, MetricType::Gauge));
      AddValue(out.back(), v);
    };
    auto counter = [&](const char* name, const char* help, double v) {
      out.push_back(Family(name, help, MetricType::Counter));
      AddValue(out.back(), v);
    };
    gauge("engram_num_requests_running", "Requests in the running batch.",
          static_cast<double>(s.requests_running));
    gauge("engram_num_requests_waiting", "Requests waiting to be admitted.",
          static_cast<double>(s.requests_waiting));
    gauge(
        "engram_kv_cache_usage_perc", "Fraction of KV cache blocks in use (0..1).",
        s.kv_blocks_total ? 1.0 - static_cast<double>(s.kv_blocks_free) / s.kv_blocks_total : 0.0);
    counter("engram_prompt_tokens_total", "Prompt tokens admitted.",
            static_cast<double>(s.prompt_tokens));
    counter("engram_generation_tokens_total", "Tokens generated.",
            static_cast<double>(s.generation_tokens));
    counter("engram_requests_rejected_total", "Requests refused before admission.",
            static_cast<double>(s.requests_rejected));
    counter("engram_requests_nonfinite_logits_total",
            "Requests ended with INTERNAL because their logits held NaN or Inf.",
            static_cast<double>(s.nonfinite_logits));
    gauge("engram_model_files_intact",
          "1 while the served model files are as mapped at start; 0 once one shrank or changed "
          "(the model then refuses requests until engramd restarts).",
          loop_.ModelHealth().ok() ? 1.0 : 0.0);
    out.push_back(Family("engram_request_success_total", "Requests finished, by finish reason.",
                         MetricType::Counter));
    for (const char* r : {"stop", "length", "cancelled", "error"}) {
      auto it = s.finished_by_reason.find(r);
      AddValue(out.back(), it == s.finished_by_reason.end() ? 0.0 : static_cast<double>(it->second),
               {{"finished_reason", r}});
    }
    out.push_back(Family("engram_time_to_first_token_seconds",
                         "Time from arrival to the first token.", MetricType::Histogram));
    AddHistogram(out.back(), s.time_to_first_token);
    out.push_back(Family("engram_inter_token_latency_seconds",
                         "Time between two tokens of a request.", MetricType::Histogram));
    AddHistogram(out.back(), s.inter_token_latency);
    out.push_back(Family("engram_e2e_request_latency_seconds", "Time from arrival to finish.",
                         MetricType::Histogram));
    AddHistogram(out.back(), s.e2e_request_latency);

    // Engram row traffic (dram / nvme tiers).
    const Engine& engine = loop_.engine();
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
    const GraphStats g = engine.graph_stats();
    counter("engram_cuda_graph_replays_total", "Decode steps whose forward ran as a CUDA graph.",
            static_cast<double>(g.replays));
    counter("engram_cuda_graph_captures_total", "CUDA graphs captured and instantiated.",
            static_cast<double>(g.captures));
    counter("engram_cuda_graph_capture_failures_total",
            "CUDA graph captures that failed (the shape then runs eagerly).",
            static_cast<double>(g.capture_failures));
    gauge("engram_estimated_throughput_loss", "Stall time / step time of the Engram row traffic.",
          o.estimated_loss());
    const TierStats ts = engine.tier_stats();
    counter("engram_row_cache_hits_total", "NVMe tier DRAM row cache hits.",
            static_cast<double>(ts.cache_hits));
    counter("engram_row_cache_misses_total", "NVMe tier DRAM row cache misses.",
            static_cast<double>(ts.cache_misses));
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
