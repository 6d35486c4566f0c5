#include "runtime/status_page.h"

#include "runtime/metrics_exporter.h"
#include "runtime/version.h"

namespace engram {

nlohmann::ordered_json StatusSnapshot(const EngineLoop& loop) {
  using Json = nlohmann::ordered_json;
  const ServingStats s = loop.Stats();
  const Engine& engine = loop.engine();
  const ModelConfig& c = loop.config();
  const TableOptions& t = engine.table_options();
  const OverlapStats o = engine.overlap_stats();
  const TierStats ts = engine.tier_stats();

  Json engram_ids = Json::array();
  if (c.engram) {
    for (int id : c.engram->layer_ids) engram_ids.push_back(id);
  }
  Json model = {{"name", loop.model_name()},
                {"architecture", c.model_type},
                {"weight_format", engine.weight_format()},
                {"num_hidden_layers", c.num_hidden_layers},
                {"hidden_size", c.hidden_size},
                {"vocab_size", c.vocab_size},
                {"max_model_len", c.max_position_embeddings},
                {"engram_variant", !c.engram         ? "none"
                                   : c.engram->v41() ? "v4.1"
                                                     : "paper"},
                {"engram_layers", std::move(engram_ids)}};
  Json tables = {{"tier", t.tier},
                 {"transfer", t.transfer},
                 {"prefetch", !o.layers.empty() && o.prefetch},
                 {"hot_cache_bytes", t.hot_cache_bytes},
                 {"resident_bytes", engine.tier_resident_bytes()},
                 {"row_cache_hits", ts.cache_hits},
                 {"row_cache_misses", ts.cache_misses},
                 {"nvme_reads", ts.io_reads},
                 {"nvme_read_retries", ts.io_retries}};
  Json serving = {{"requests_running", s.requests_running},
                  {"requests_waiting", s.requests_waiting},
                  {"requests_finished", s.requests_finished},
                  {"requests_rejected", s.requests_rejected},
                  {"prompt_tokens_total", s.prompt_tokens},
                  {"generation_tokens_total", s.generation_tokens},
                  {"steps", s.steps},
                  {"kv_cache_usage", KvCacheUsage(s)},
                  {"kv_blocks_total", s.kv_blocks_total},
                  {"kv_blocks_reserved", s.kv_blocks_reserved}};
  // One entry per Engram layer of the model; the resident tier counts no row traffic, so its
  // layers report zeros (overlap 1: nothing to hide).
  Json layers = Json::array();
  if (c.engram) {
    for (int id : c.engram->layer_ids) {
      LayerOverlap l;
      l.layer_id = id;
      for (const LayerOverlap& x : o.layers) {
        if (x.layer_id == id) l = x;
      }
      layers.push_back({{"layer", id},
                        {"rows_requested", l.rows_requested},
                        {"rows_unique", l.unique_rows},
                        {"hot_cache_hit_ratio", l.hot_hit_rate()},
                        {"bytes_moved", l.bytes_moved},
                        {"transfer_s", l.transfer_s},
                        {"stall_s", l.stall_s},
                        {"overlap", l.overlap()},
                        {"estimated_loss", EstimatedLayerLoss(o, l)}});
    }
  }
  Json engram = {{"step_s", o.step_s},
                 {"estimated_throughput_loss", o.estimated_loss()},
                 {"layers", std::move(layers)}};
  return Json{{"version", Version()},          {"uptime_s", s.uptime_s},
              {"model", std::move(model)},     {"tables", std::move(tables)},
              {"serving", std::move(serving)}, {"engram", std::move(engram)}};
}

std::string_view StatusPageHtml() {
  // Self-contained: no external script, style, font or image. The script records what it
  // rendered on #status (data-*) and any error it caught, for tests and for curious operators.
  static constexpr std::string_view kPage = R"html(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>engramd status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
body{font:13px/1.4 system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:18px;margin:0 0 8px}table{border-collapse:collapse;margin-bottom:12px}
td{padding:1px 10px 1px 0}td:first-child{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:#fff;border:1px solid #ddd;padding:6px}.chart h2{font-size:13px;margin:0 0 4px}
.legend span{margin-right:10px;white-space:nowrap}#errors{color:#b00}
#status{color:#888;margin-top:10px}
</style></head><body>
<h1>engramd <span id="name"></span></h1>
<table id="model"></table>
<div class="charts" id="charts"></div>
<div id="errors"></div>
<div id="status" data-polls="0" data-errors="">waiting for status.json</div>
<script>
"use strict";
const N = 120, W = 380, H = 110;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const samples = [];  // {t, j, prompt_tps, generation_tps, stall_ms_per_s: {layer: v}}
const errors = [];
let polls = 0;
function noteError(msg) {
  errors.push(String(msg));
  const st = document.getElementById("status");
  st.dataset.errors = JSON.stringify(errors.slice(-10));
  document.getElementById("errors").textContent = errors.slice(-3).join("; ");
}
window.addEventListener("error", (e) => noteError(e.message));
window.addEventListener("unhandledrejection", (e) => noteError(e.reason));
function layersOf(j) { return j.engram.layers.map((l) => l.layer); }
const CHARTS = [
  {id: "tokens", title: "tokens/s", lines: () => [
    ["prompt", (s) => s.prompt_tps], ["generation", (s) => s.generation_tps]]},
  {id: "queue", title: "requests", lines: () => [
    ["waiting", (s) => s.j.serving.requests_waiting],
    ["running", (s) => s.j.serving.requests_running]]},
  {id: "kv", title: "KV cache usage %", lines: () => [
    ["reserved", (s) => 100 * s.j.serving.kv_cache_usage]]},
  {id: "overlap", title: "Engram overlap % (1 - stall / transfer)", perLayer: (l) => 100 * l.overlap},
  {id: "stall", title: "Engram stall ms per s", perLayer: (l, s) => s.stall_ms_per_s[l.layer]},
  {id: "loss", title: "Engram estimated loss % (stall / step)", perLayer: (l) => 100 * l.estimated_loss},
];
function linesOf(c, j) {
  if (!c.perLayer) return c.lines();
  return layersOf(j).map((id, i) => ["layer " + id, (s) => {
    const l = s.j.engram.layers.find((x) => x.layer === id);
    return l === undefined ? undefined : c.perLayer(l, s);
  }]);
}
function fmt(v) {
  if (v === undefined || !isFinite(v)) return "-";
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}
function draw(c, j) {
  let box = document.getElementById("chart-" + c.id);
  if (!box) {
    box = document.createElement("div");
    box.className = "chart";
    box.id = "chart-" + c.id;
    box.innerHTML = "<h2></h2><svg width='" + W + "' height='" + H + "' data-chart='" + c.id +
        "' data-points='0'></svg><div class='legend'></div>";
    box.querySelector("h2").textContent = c.title;
    document.getElementById("charts").appendChild(box);
  }
  const lines = linesOf(c, j);
  let max = 0, min = 0, drawn = 0;
  const pts = lines.map(([, f]) => samples.map((s, i) => [i, f(s)]).filter(
      (p) => p[1] !== undefined && isFinite(p[1])));
  for (const p of pts) for (const [, v] of p) { max = Math.max(max, v); min = Math.min(min, v); }
  if (max - min <= 0) max = min + 1;
  let svg = "<rect x='0.5' y='0.5' width='" + (W - 1) + "' height='" + (H - 1) +
      "' fill='none' stroke='#ccc'/><text x='4' y='12' font-size='10' fill='#888'>" + fmt(max) +
      "</text>" + (min < 0 ? "<text x='4' y='" + (H - 4) + "' font-size='10' fill='#888'>" +
      fmt(min) + "</text>" : "");
  const legend = [];
  pts.forEach((p, k) => {
    const color = COLORS[k % COLORS.length];
    const xy = p.map(([i, v]) => (i * (W - 2) / (N - 1) + 1).toFixed(1) + "," +
        (H - 2 - (v - min) / (max - min) * (H - 16)).toFixed(1));
    if (xy.length > 0) {
      svg += "<polyline fill='none' stroke='" + color + "' stroke-width='1.5' points='" +
          xy.join(" ") + "'/>";
      drawn = drawn === 0 ? xy.length : Math.min(drawn, xy.length);
    }
    const last = p.length ? p[p.length - 1][1] : undefined;
    legend.push("<span style='color:" + color + "'>" + lines[k][0] + ": " + fmt(last) + "</span>");
  });
  const el = box.querySelector("svg");
  el.innerHTML = svg;
  el.dataset.points = String(drawn);
  box.querySelector(".legend").innerHTML = legend.join("");
}
function showModel(j) {
  document.getElementById("name").textContent = j.model.name;
  const m = j.model, t = j.tables;
  const rows = [
    ["model", m.name], ["architecture", m.architecture + ", " + m.num_hidden_layers +
        " layers, hidden " + m.hidden_size + ", vocab " + m.vocab_size],
    ["weights", m.weight_format], ["context", m.max_model_len],
    ["Engram", m.engram_variant + ", layers [" + m.engram_layers.join(", ") + "]"],
    ["tier", t.tier + " (transfer " + t.transfer + ", prefetch " + t.prefetch +
        ", hot cache " + t.hot_cache_bytes + " B, resident " + t.resident_bytes + " B)"],
    ["version", j.version], ["uptime", fmt(j.uptime_s) + " s"],
  ];
  const tbl = document.getElementById("model");
  tbl.textContent = "";
  for (const [k, v] of rows) {
    const tr = tbl.insertRow();
    tr.insertCell().textContent = k;
    tr.insertCell().textContent = String(v);
  }
}
function add(j) {
  const prev = samples.length ? samples[samples.length - 1] : null;
  const s = {t: j.uptime_s, j: j, stall_ms_per_s: {}};
  const dt = prev ? j.uptime_s - prev.t : 0;
  if (prev && dt > 0) {
    s.prompt_tps = (j.serving.prompt_tokens_total - prev.j.serving.prompt_tokens_total) / dt;
    s.generation_tps =
        (j.serving.generation_tokens_total - prev.j.serving.generation_tokens_total) / dt;
    for (const l of j.engram.layers) {
      const p = prev.j.engram.layers.find((x) => x.layer === l.layer);
      if (p) s.stall_ms_per_s[l.layer] = 1000 * (l.stall_s - p.stall_s) / dt;
    }
  }
  samples.push(s);
  while (samples.length > N) samples.shift();
  return s;
}
function render(s) {
  const j = s.j;
  showModel(j);
  for (const c of CHARTS) draw(c, j);
  const st = document.getElementById("status");
  const d = st.dataset;
  d.polls = String(polls);
  d.uptimeS = String(j.uptime_s);
  d.promptTokensTotal = String(j.serving.prompt_tokens_total);
  d.generationTokensTotal = String(j.serving.generation_tokens_total);
  d.requestsRunning = String(j.serving.requests_running);
  d.requestsWaiting = String(j.serving.requests_waiting);
  d.kvCacheUsage = String(j.serving.kv_cache_usage);
  d.promptTps = s.prompt_tps === undefined ? "" : String(s.prompt_tps);
  d.generationTps = s.generation_tps === undefined ? "" : String(s.generation_tps);
  d.layers = layersOf(j).join(",");
  st.textContent = "updated " + new Date().toLocaleTimeString() + " (" + polls + " polls)";
}
async function poll() {
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    if (!r.ok) throw new Error("status.json: HTTP " + r.status);
    const j = await r.json();
    ++polls;
    render(add(j));
  } catch (e) {
    noteError(e && e.message ? e.message : e);
  } finally {
    setTimeout(poll, 1000);
  }
}
poll();
</script>
</body></html>
)html";
  return kPage;
}

}  // namespace engram
