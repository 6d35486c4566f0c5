// The live status page of the HTTP front door (docs/operations.md, "Status page"):
//   GET /            a self-contained HTML page (inline CSS and vanilla JavaScript, no external
//                    fetch) that polls status.json every second and draws time series as SVG;
//   GET /status.json StatusSnapshot below (schema in docs/api.md, "GET /status.json").
// The snapshot reads the same sources as the Prometheus exposition (EngineLoop::Stats,
// Engine::overlap_stats and tier_stats, and the shared KvCacheUsage / EstimatedLayerLoss of
// runtime/metrics_exporter.h), so the page and /metrics agree.
//
// Thread safety: both are callable from any thread (the loop's snapshots are thread-safe).
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "runtime/engine_loop.h"

namespace engram {

// The model, its tables and the cumulative counters now. Rates (tokens/s, stall per second)
// are left to the reader: differences of two snapshots over their `uptime_s`.
nlohmann::ordered_json StatusSnapshot(const EngineLoop& loop);

// The page served on GET / (text/html; charset=utf-8).
std::string_view StatusPageHtml();

}  // namespace engram
