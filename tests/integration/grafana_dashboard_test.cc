// deploy/grafana/engramd.json against a real engramd: every metric name each panel's PromQL
// (and each templating query) reads must be a series the daemon's /metrics serves, and every
// label it groups by or matches on must be a label of that series; panel ids and titles are
// unique. The PromQL reader is a small lexer, not a full parser: identifiers are metric names
// unless they are a PromQL function, aggregation or keyword; string literals, range and
// subquery brackets and Grafana variables are skipped. Its own checks (GrafanaLint.*) show it
// finds the names in known expressions and reports a wrong name, label or function.
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../support/loopback_http.h"
#include "daemon_process.h"
#include "rpc_helpers.h"

namespace engram::testing {
namespace {

using nlohmann::json;

// ---- The scrape: sample names, their label names, the families' types.
struct Scrape {
  std::map<std::string, std::string> family_type;              // "# TYPE name type"
  std::map<std::string, std::set<std::string>> sample_labels;  // sample name -> label names
};

Scrape ParseScrape(const std::string& text) {
  Scrape s;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream f(line);
      std::string hash, kw, name, type;
      f >> hash >> kw >> name >> type;
      if (kw == "TYPE") s.family_type[name] = type;
      continue;
    }
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    std::set<std::string>& labels = s.sample_labels[line.substr(0, i)];
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos) break;
        labels.insert(line.substr(i, eq - i));
        i = eq + 2;  // past ="
        while (i < line.size() && line[i] != '"') i += line[i] == '\\' ? 2 : 1;
        i += 1;  // past the closing quote
        if (i < line.size() && line[i] == ',') ++i;
      }
    }
  }
  return s;
}

// ---- PromQL: the metric names an expression reads, with the labels used on each.
struct MetricRef {
  std::string name;
  size_t pos = 0;
  std::set<std::string> matcher_labels;  // {label=...}
};
struct Grouping {  // by (labels) and the [begin, end] of the aggregation body it applies to
  std::vector<std::string> labels;
  size_t begin = 0, end = 0;
};
struct PromQl {
  std::vector<MetricRef> metrics;
  std::vector<Grouping> groupings;
  std::vector<std::string> problems;  // unknown functions, unbalanced parentheses
};

const std::set<std::string>& Functions() {
  static const std::set<std::string> f = {
      // aggregations
      "sum", "avg", "min", "max", "count", "stddev", "stdvar", "group", "topk", "bottomk",
      "quantile", "count_values", "limitk", "limit_ratio",
      // functions
      "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
      "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
      "floor", "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile",
      "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta",
      "increase", "irate", "label_join", "label_replace", "ln", "log2", "log10", "minute", "month",
      "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort", "sort_desc",
      "sort_by_label", "sort_by_label_desc", "sqrt", "time", "timestamp", "vector", "year",
      "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
      "quantile_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time",
      "present_over_time", "mad_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
      "cos", "cosh", "sin", "sinh", "tan", "tanh", "deg", "rad", "pi"};
  return f;
}
const std::set<std::string>& Keywords() {  // neither names nor calls
  static const std::set<std::string> k = {"and",   "or",  "unless", "bool", "offset",
                                          "atan2", "inf", "nan",    "Inf",  "NaN"};
  return k;
}
const std::set<std::string>& LabelListKeywords() {  // keyword (label, ...)
  static const std::set<std::string> k = {"by",       "without",    "on",
                                          "ignoring", "group_left", "group_right"};
  return k;
}

bool IdentStart(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
}
bool IdentChar(char c) { return IdentStart(c) || std::isdigit(static_cast<unsigned char>(c)); }

PromQl ParsePromQl(const std::string& expr) {
  PromQl out;
  // String literals' contents and [range] / [range:step] contents become spaces, so what is
  // left is names, calls, numbers, operators, parentheses and braces.
  std::string m = expr;
  for (size_t i = 0; i < m.size(); ++i) {
    const char c = m[i];
    if (c == '"' || c == '\'' || c == '`') {
      size_t j = i + 1;
      while (j < m.size() && m[j] != c) j += (c != '`' && m[j] == '\\') ? 2 : 1;
      for (size_t k = i + 1; k < j && k < m.size(); ++k) m[k] = ' ';
      i = j;
    } else if (c == '[') {
      size_t j = i + 1;
      while (j < m.size() && m[j] != ']') m[j++] = ' ';
      i = j;
    }
  }
  std::vector<size_t> match(m.size(), std::string::npos);
  std::vector<size_t> stack;
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i] == '(') {
      stack.push_back(i);
    } else if (m[i] == ')') {
      if (stack.empty()) {
        out.problems.push_back("unbalanced ')' at " + std::to_string(i));
        return out;
      }
      match[i] = stack.back();
      match[stack.back()] = i;
      stack.pop_back();
    }
  }
  if (!stack.empty()) {
    out.problems.push_back("unbalanced '(' at " + std::to_string(stack.back()));
    return out;
  }
  const auto skip_space = [&](size_t i) {
    while (i < m.size() && std::isspace(static_cast<unsigned char>(m[i]))) ++i;
    return i;
  };
  // Label names of a {matcher, ...} list starting at m[open] == '{'; returns past the '}'.
  const auto matchers = [&](size_t open, std::set<std::string>* labels) {
    size_t i = open + 1;
    while (i < m.size() && m[i] != '}') {
      if (IdentStart(m[i])) {
        const size_t s = i;
        while (i < m.size() && IdentChar(m[i])) ++i;
        const size_t n = skip_space(i);
        if (n < m.size() && (m[n] == '=' || m[n] == '!')) labels->insert(m.substr(s, i - s));
      } else {
        ++i;
      }
    }
    return i + 1;
  };

  size_t i = 0;
  while (i < m.size()) {
    const char c = m[i];
    if (c == '$') {  // a Grafana variable: $name or ${name}
      ++i;
      if (i < m.size() && m[i] == '{') {
        while (i < m.size() && m[i] != '}') ++i;
        ++i;
      } else {
        while (i < m.size() && IdentChar(m[i])) ++i;
      }
    } else if (std::isdigit(static_cast<unsigned char>(c)) ||
               (c == '.' && i + 1 < m.size() &&
                std::isdigit(static_cast<unsigned char>(m[i + 1])))) {
      // a number (1e-9, 0x1f, .5) or a duration (5m)
      while (i < m.size() &&
             (IdentChar(m[i]) || m[i] == '.' ||
              ((m[i] == '-' || m[i] == '+') && (m[i - 1] == 'e' || m[i - 1] == 'E')))) {
        ++i;
      }
    } else if (IdentStart(c)) {
      const size_t s = i;
      while (i < m.size() && IdentChar(m[i])) ++i;
      const std::string id = m.substr(s, i - s);
      const size_t n = skip_space(i);
      // A call: NAME (...), or an aggregation with its grouping first: sum by (...) (...).
      const auto word_at = [&](size_t k, const std::string& w) {
        return m.compare(k, w.size(), w) == 0 &&
               (k + w.size() >= m.size() || !IdentChar(m[k + w.size()]));
      };
      const bool call =
          n < m.size() &&
          (m[n] == '(' || (Functions().count(id) && (word_at(n, "by") || word_at(n, "without"))));
      if (LabelListKeywords().count(id)) {
        if (!call) continue;  // group_left without labels
        const size_t close = match[n];
        Grouping g;
        for (size_t k = n + 1; k < close;) {
          if (IdentStart(m[k])) {
            const size_t b = k;
            while (k < close && IdentChar(m[k])) ++k;
            g.labels.push_back(m.substr(b, k - b));
          } else {
            ++k;
          }
        }
        i = close + 1;
        if (id != "by") continue;  // without/on/ignoring/group_*: not checked
        // The body: the parenthesis after `by (...)`, or the one before `by`.
        const size_t after = skip_space(i);
        size_t before = s;
        while (before > 0 && std::isspace(static_cast<unsigned char>(m[before - 1]))) --before;
        if (after < m.size() && m[after] == '(') {
          g.begin = after;
          g.end = match[after];
        } else if (before > 0 && m[before - 1] == ')') {
          g.begin = match[before - 1];
          g.end = before - 1;
        } else {
          out.problems.push_back("by (...) at " + std::to_string(s) + " has no aggregation body");
          continue;
        }
        out.groupings.push_back(std::move(g));
      } else if (Keywords().count(id)) {
        // an operator or a number literal
      } else if (call) {
        if (!Functions().count(id)) out.problems.push_back("unknown function " + id + "(");
      } else {
        MetricRef r;
        r.name = id;
        r.pos = s;
        if (n < m.size() && m[n] == '{') i = matchers(n, &r.matcher_labels);
        out.metrics.push_back(std::move(r));
      }
    } else if (c == '{') {  // a selector without a name ({__name__=...}): not used here
      std::set<std::string> ignored;
      i = matchers(i, &ignored);
    } else {
      ++i;
    }
  }
  return out;
}

// A histogram sample name's family (NAME for NAME_bucket/_sum/_count when NAME is a histogram
// in the scrape), else the name itself.
std::string Family(const std::string& name, const Scrape& scrape) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string sfx = suffix;
    if (name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
      const std::string f = name.substr(0, name.size() - sfx.size());
      auto it = scrape.family_type.find(f);
      if (it != scrape.family_type.end() && it->second == "histogram") return f;
    }
  }
  return name;
}

// What is wrong with `expr` against `scrape` (empty = nothing). `extra_label`, when not empty, is
// a label every metric of `expr` must have (label_values' second argument).
std::vector<std::string> CheckExpr(const std::string& expr, const Scrape& scrape,
                                   const std::string& extra_label = "") {
  const PromQl q = ParsePromQl(expr);
  std::vector<std::string> problems = q.problems;
  if (q.metrics.empty()) problems.push_back("reads no metric");
  for (const MetricRef& r : q.metrics) {
    auto it = scrape.sample_labels.find(r.name);
    if (it == scrape.sample_labels.end()) {
      auto t = scrape.family_type.find(r.name);
      if (t != scrape.family_type.end() && t->second == "histogram") {
        problems.push_back(r.name + " is a histogram family, not a series (use " + r.name +
                           "_bucket, _sum or _count)");
      } else {
        problems.push_back("metric " + r.name + " is not in the scrape");
      }
      continue;
    }
    std::set<std::string> used = r.matcher_labels;
    if (!extra_label.empty()) used.insert(extra_label);
    for (const Grouping& g : q.groupings) {
      if (r.pos > g.begin && r.pos < g.end) used.insert(g.labels.begin(), g.labels.end());
    }
    for (const std::string& l : used) {
      if (!it->second.count(l)) {
        problems.push_back("label " + l + " is not a label of " + r.name + " (family " +
                           Family(r.name, scrape) + ") in the scrape");
      }
    }
  }
  return problems;
}

// A templating query: label_values(selector, label), label_values(label) or PromQL.
std::vector<std::string> CheckTemplatingQuery(const std::string& query, const Scrape& scrape) {
  const std::string lv = "label_values(";
  if (query.rfind(lv, 0) == 0 && query.back() == ')') {
    const std::string args = query.substr(lv.size(), query.size() - lv.size() - 1);
    const size_t comma = args.rfind(',');
    if (comma == std::string::npos) return {};  // label_values(label): any series
    std::string label = args.substr(comma + 1);
    label.erase(0, label.find_first_not_of(' '));
    label.erase(label.find_last_not_of(' ') + 1);
    return CheckExpr(args.substr(0, comma), scrape, label);
  }
  for (const char* f : {"label_names(", "metrics(", "query_result("}) {
    if (query.rfind(f, 0) == 0) return {"templating function " + std::string(f) + " not checked"};
  }
  return CheckExpr(query, scrape);
}

void CollectPanels(const json& list, std::vector<const json*>* out) {
  for (const json& p : list) {
    out->push_back(&p);
    if (p.contains("panels") && p["panels"].is_array()) CollectPanels(p["panels"], out);
  }
}

// Every problem of `dash` against `scrape`, each naming the panel (or variable) and the
// expression.
std::vector<std::string> LintDashboard(const json& dash, const Scrape& scrape) {
  std::vector<std::string> problems;
  std::vector<const json*> panels;
  if (!dash.contains("panels") || !dash["panels"].is_array()) return {"no panels"};
  CollectPanels(dash["panels"], &panels);
  std::set<int64_t> ids;
  std::set<std::string> titles;
  for (const json* pp : panels) {
    const json& p = *pp;
    const std::string title = p.value("title", "");
    const std::string where = "panel '" + title + "'";
    if (!p.contains("id") || !p["id"].is_number_integer()) {
      problems.push_back(where + ": no integer id");
    } else if (!ids.insert(p["id"].get<int64_t>()).second) {
      problems.push_back(where + ": duplicate id " + std::to_string(p["id"].get<int64_t>()));
    }
    if (title.empty()) problems.push_back("a panel without a title");
    if (!titles.insert(title).second) problems.push_back(where + ": duplicate title");
    if (p.value("type", "") == "row") continue;
    if (!p.contains("targets") || !p["targets"].is_array() || p["targets"].empty()) {
      problems.push_back(where + ": no targets");
      continue;
    }
    for (const json& t : p["targets"]) {
      const std::string expr = t.value("expr", "");
      const std::string ref = where + " target " + t.value("refId", "?") + " `" + expr + "`";
      if (expr.empty()) {
        problems.push_back(ref + ": no expr");
        continue;
      }
      for (const std::string& e : CheckExpr(expr, scrape)) problems.push_back(ref + ": " + e);
    }
  }
  if (dash.contains("templating") && dash["templating"].contains("list")) {
    for (const json& v : dash["templating"]["list"]) {
      if (v.value("type", "") != "query") continue;
      std::string query;
      if (v.contains("query") && v["query"].is_string()) query = v["query"].get<std::string>();
      if (v.contains("query") && v["query"].is_object()) query = v["query"].value("query", "");
      const std::string ref = "variable $" + v.value("name", "") + " `" + query + "`";
      if (query.empty()) {
        problems.push_back(ref + ": no query");
        continue;
      }
      for (const std::string& e : CheckTemplatingQuery(query, scrape)) {
        problems.push_back(ref + ": " + e);
      }
    }
  }
  return problems;
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += "  " + x + "\n";
  return s;
}

json LoadDashboard() {
  std::ifstream f(std::string(ENGRAM_REPO) + "/deploy/grafana/engramd.json");
  EXPECT_TRUE(f.good()) << "cannot open deploy/grafana/engramd.json";
  return json::parse(f);  // throws (and fails the test) on a syntax error
}

// A scrape in engramd's format: a served gauge, a per-layer counter, a histogram, a plain gauge.
const char* kFakeScrape = R"(# HELP engram_num_requests_running Requests in the running batch.
# TYPE engram_num_requests_running gauge
engram_num_requests_running{model_name="synth:tiny",engine="0"} 0
# TYPE engram_prefetch_stall_seconds_total counter
engram_prefetch_stall_seconds_total{layer="1",tier="dram"} 7.7e-05
# TYPE engram_time_to_first_token_seconds histogram
engram_time_to_first_token_seconds_count{model_name="a \"quoted\" one",engine="0"} 2
engram_time_to_first_token_seconds_sum{model_name="x",engine="0"} 0.1
engram_time_to_first_token_seconds_bucket{model_name="x",engine="0",le="0.001"} 0
engram_time_to_first_token_seconds_bucket{model_name="x",engine="0",le="+Inf"} 2
# TYPE engram_estimated_throughput_loss gauge
engram_estimated_throughput_loss 0.0025
)";

std::vector<std::string> Names(const std::string& expr) {
  std::vector<std::string> v;
  for (const MetricRef& r : ParsePromQl(expr).metrics) v.push_back(r.name);
  return v;
}

TEST(GrafanaLint, ExtractsMetricNamesFromKnownExpressions) {
  using V = std::vector<std::string>;
  EXPECT_EQ(
      Names(
          R"(histogram_quantile(0.99, sum by (le) (rate(engram_time_to_first_token_seconds_bucket{model_name=~"$model_name"}[$__rate_interval]))))"),
      V{"engram_time_to_first_token_seconds_bucket"});
  EXPECT_EQ(Names("1 - sum by (layer) (rate(a_total[5m])) / sum(rate(b_total[1m:10s])) by (layer)"),
            (V{"a_total", "b_total"}));
  EXPECT_EQ(Names("sum(rate(x[1m])) / clamp_min(y, 1e-9) > bool 0.5 and on (k) z offset 5m"),
            (V{"x", "y", "z"}));
  EXPECT_EQ(Names(R"q(sum without (tier) (irate(w{tier="by (layer) rate(q)"}[${__range}])))q"),
            V{"w"});
  EXPECT_EQ(Names("max(increase(m:recorded[5m])) * ignoring (a) group_left (b) n"),
            (V{"m:recorded", "n"}));

  const PromQl q = ParsePromQl(
      R"(sum by (le, layer) (rate(h_bucket{model_name="m",tier!~"n.*"}[5m])) / sum(c) by (layer))");
  ASSERT_EQ(q.metrics.size(), 2u);
  EXPECT_EQ(q.metrics[0].matcher_labels, (std::set<std::string>{"model_name", "tier"}));
  ASSERT_EQ(q.groupings.size(), 2u);
  EXPECT_EQ(q.groupings[0].labels, (V{"le", "layer"}));
  EXPECT_TRUE(q.groupings[0].begin < q.metrics[0].pos && q.metrics[0].pos < q.groupings[0].end);
  EXPECT_FALSE(q.groupings[0].begin < q.metrics[1].pos && q.metrics[1].pos < q.groupings[0].end);
  EXPECT_TRUE(q.groupings[1].begin < q.metrics[1].pos && q.metrics[1].pos < q.groupings[1].end);
  EXPECT_TRUE(q.problems.empty()) << Join(q.problems);
}

TEST(GrafanaLint, ReportsWrongNamesLabelsAndFunctions) {
  const Scrape s = ParseScrape(kFakeScrape);
  EXPECT_EQ(s.family_type.at("engram_time_to_first_token_seconds"), "histogram");
  EXPECT_EQ(s.sample_labels.at("engram_time_to_first_token_seconds_count"),
            (std::set<std::string>{"model_name", "engine"}));
  EXPECT_EQ(s.sample_labels.at("engram_time_to_first_token_seconds_bucket"),
            (std::set<std::string>{"model_name", "engine", "le"}));
  EXPECT_TRUE(s.sample_labels.at("engram_estimated_throughput_loss").empty());
  EXPECT_EQ(Family("engram_time_to_first_token_seconds_bucket", s),
            "engram_time_to_first_token_seconds");
  EXPECT_EQ(Family("engram_prefetch_stall_seconds_total", s),
            "engram_prefetch_stall_seconds_total");

  // Good expressions pass.
  EXPECT_EQ(
      Join(CheckExpr(
          R"(histogram_quantile(0.9, sum by (le) (rate(engram_time_to_first_token_seconds_bucket{model_name=~"$model_name"}[$__rate_interval]))))",
          s)),
      "");
  EXPECT_EQ(Join(CheckExpr("sum by (layer) (rate(engram_prefetch_stall_seconds_total[5m]))", s)),
            "");
  EXPECT_EQ(Join(CheckTemplatingQuery("label_values(engram_num_requests_running, model_name)", s)),
            "");

  const auto reports = [&](const std::string& expr, const std::string& what) {
    const std::string all = Join(CheckExpr(expr, s));
    EXPECT_NE(all.find(what), std::string::npos) << expr << " gave:\n" << all;
  };
  reports("rate(engram_prefetch_stall_second_total[5m])",
          "metric engram_prefetch_stall_second_total is not in the scrape");
  reports("histogram_quantile(0.9, rate(engram_time_to_first_token_seconds[5m]))",
          "engram_time_to_first_token_seconds is a histogram family");
  reports("sum by (layer) (engram_estimated_throughput_loss)",
          "label layer is not a label of engram_estimated_throughput_loss");
  reports("sum(rate(engram_prefetch_stall_seconds_total[5m])) by (model_name)",
          "label model_name is not a label of engram_prefetch_stall_seconds_total");
  reports(R"(engram_num_requests_running{finished_reason="error"})",
          "label finished_reason is not a label of engram_num_requests_running");
  reports("sum by (le) (rate(engram_time_to_first_token_seconds_count[5m]))",
          "label le is not a label of engram_time_to_first_token_seconds_count (family "
          "engram_time_to_first_token_seconds)");
  reports("rat(engram_prefetch_stall_seconds_total[5m])", "unknown function rat(");
  reports("sum(rate(engram_prefetch_stall_seconds_total[5m])", "unbalanced");
  EXPECT_NE(Join(CheckTemplatingQuery("label_values(engram_num_requests_running, layer)", s))
                .find("label layer is not a label of engram_num_requests_running"),
            std::string::npos);
}

// The real dashboard with one expression made wrong (in memory) is reported, naming the panel
// and the expression; duplicate ids and titles are reported too.
TEST(GrafanaLint, ReportsTheBrokenPanelOfTheDashboard) {
  json dash = LoadDashboard();
  const Scrape s = ParseScrape(kFakeScrape);
  json* victim = nullptr;
  for (json& p : dash["panels"]) {
    if (p.value("type", "") == "timeseries") {
      victim = &p;
      break;
    }
  }
  ASSERT_NE(victim, nullptr);
  const std::string title = (*victim)["title"].get<std::string>();
  (*victim)["targets"][0]["expr"] = "sum(rate(engram_no_such_metric_total[5m]))";
  const std::string all = Join(LintDashboard(dash, s));
  EXPECT_NE(all.find("panel '" + title +
                     "' target A `sum(rate(engram_no_such_metric_total[5m]))`: metric "
                     "engram_no_such_metric_total is not in the scrape"),
            std::string::npos)
      << all;

  json dup = json::parse(R"({"panels": [
    {"id": 1, "title": "a", "type": "stat", "targets": [{"refId": "A", "expr": "engram_estimated_throughput_loss"}]},
    {"id": 1, "title": "a", "type": "stat", "targets": [{"refId": "A", "expr": "engram_estimated_throughput_loss"}]}]})");
  const std::string d = Join(LintDashboard(dup, s));
  EXPECT_NE(d.find("panel 'a': duplicate id 1"), std::string::npos) << d;
  EXPECT_NE(d.find("panel 'a': duplicate title"), std::string::npos) << d;
}

// The dashboard's structure: current schema, the DS_PROMETHEUS and model_name variables,
// every panel on that datasource, time-series and stat panels.
TEST(GrafanaDashboard, HasVariablesDatasourceAndPanelKinds) {
  const json dash = LoadDashboard();
  EXPECT_GE(dash.value("schemaVersion", 0), 39);
  EXPECT_FALSE(dash.value("uid", "").empty());
  bool ds = false, model = false;
  for (const json& v : dash["templating"]["list"]) {
    if (v.value("name", "") == "DS_PROMETHEUS") {
      ds = v.value("type", "") == "datasource" && v.value("query", "") == "prometheus";
    }
    if (v.value("name", "") == "model_name") {
      model = v.value("type", "") == "query" &&
              v["query"].value("query", "").rfind("label_values(", 0) == 0;
    }
  }
  EXPECT_TRUE(ds) << "no DS_PROMETHEUS datasource variable";
  EXPECT_TRUE(model) << "no model_name label_values variable";
  std::vector<const json*> panels;
  CollectPanels(dash["panels"], &panels);
  std::set<std::string> kinds;
  for (const json* p : panels) {
    const std::string type = p->value("type", "");
    kinds.insert(type);
    if (type == "row") continue;
    EXPECT_EQ((*p)["datasource"].value("uid", ""), "${DS_PROMETHEUS}") << (*p)["title"];
    for (const json& t : (*p)["targets"]) {
      EXPECT_EQ(t["datasource"].value("uid", ""), "${DS_PROMETHEUS}") << (*p)["title"];
    }
  }
  EXPECT_TRUE(kinds.count("timeseries"));
  EXPECT_TRUE(kinds.count("stat"));
}

// Every name and label the dashboard reads is served by a real engramd (the dram tier with a
// hot-row cache, so the per-layer Engram series exist) after two requests.
TEST(GrafanaDashboard, EveryQueryReadsMetricsEngramdServes) {
  DaemonOptions o;
  o.metrics = true;
  o.tables = "  tier: dram\n  hot_cache_bytes: 65536\n";
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const auto line = (*d)->Line("engramd: metrics on http://127.0.0.1:");
  ASSERT_TRUE(line.has_value()) << "no metrics line";
  const int port = std::atoi(line->c_str() + line->rfind(':') + 1);
  auto stub = v1::Engram::NewStub(Connect((*d)->address()));
  for (int k = 0; k < 2; ++k) {
    const StreamResult r = Generate(*stub, IdsRequest({5, 6, 7, 8, 9, 10, 11, 5, 6, 7}, 6), 30);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  }
  const std::string raw = Exchange(port, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  const size_t body = raw.find("\r\n\r\n");
  ASSERT_NE(body, std::string::npos) << raw.substr(0, 200);
  const Scrape scrape = ParseScrape(raw.substr(body + 4));
  // The scrape holds what the dashboard is about: per-layer row traffic and counted latencies.
  ASSERT_TRUE(scrape.sample_labels.count("engram_prefetch_stall_seconds_total"));
  ASSERT_TRUE(scrape.sample_labels.count("engram_time_to_first_token_seconds_bucket"));
  EXPECT_EQ(scrape.family_type.at("engram_inter_token_latency_seconds"), "histogram");

  const json dash = LoadDashboard();
  const std::vector<std::string> problems = LintDashboard(dash, scrape);
  EXPECT_TRUE(problems.empty()) << "deploy/grafana/engramd.json reads what engramd does not "
                                   "serve:\n"
                                << Join(problems);
  // And the check did look: the dashboard reads a fair share of the exposition.
  std::set<std::string> read;
  std::vector<const json*> panels;
  CollectPanels(dash["panels"], &panels);
  for (const json* p : panels) {
    if (!p->contains("targets")) continue;
    for (const json& t : (*p)["targets"]) {
      for (const std::string& n : Names(t.value("expr", ""))) read.insert(n);
    }
  }
  EXPECT_GE(read.size(), 20u);
}

}  // namespace
}  // namespace engram::testing
