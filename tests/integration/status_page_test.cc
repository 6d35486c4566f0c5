// The status page of a real engramd's HTTP front door (GET / and GET /status.json), read with
// curl and rendered by headless Chromium (Debian's chromium, installed by scripts/setup.sh): the
// JSON's schema and its numbers moving with a request, the page self-contained, the numbers the
// page drew agreeing with status.json, and the routes following /metrics' API-key rule.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "../support/shell.h"
#include "shared_daemon.h"

namespace engram::testing {
namespace {

using Json = nlohmann::json;
constexpr const char* kKey = "status-page-test-key-0123456789";
const std::string kAuth = std::string("-H 'Authorization: Bearer ") + kKey + "' ";

struct Reply {
  int status = 0;
  std::string content_type, body;
};

// curl GET (or another method with `extra`, e.g. "-X POST"): status, content type and body.
Reply Curl(const std::string& http, const std::string& path, const std::string& extra = "") {
  int rc = 0;
  const std::string out = Capture("curl -sS --max-time 30 -w '\\n%{http_code} %{content_type}' " +
                                      extra + " http://" + http + path,
                                  &rc);
  EXPECT_EQ(rc, 0) << "curl failed: " << out;
  Reply r;
  const size_t nl = out.rfind('\n');
  if (nl == std::string::npos) return r;
  r.body = out.substr(0, nl);
  const std::string tail = out.substr(nl + 1);
  r.status = std::atoi(tail.c_str());
  const size_t sp = tail.find(' ');
  if (sp != std::string::npos) r.content_type = tail.substr(sp + 1);
  return r;
}

Json Status(const std::string& http) {
  const Reply r = Curl(http, "/status.json");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type, "application/json");
  Json j = Json::parse(r.body, nullptr, false);
  EXPECT_TRUE(j.is_object()) << r.body;
  return j;
}

// One completion with the key; its usage.
Json Complete(const std::string& http, int max_tokens) {
  const Json req = {{"prompt", "Engram tables live in host memory"},
                    {"max_tokens", max_tokens},
                    {"ignore_eos", true}};
  const Reply r =
      Curl(http, "/v1/completions",
           kAuth + "-H 'Content-Type: application/json' --data-binary '" + req.dump() + "'");
  EXPECT_EQ(r.status, 200) << r.body;
  const Json j = Json::parse(r.body, nullptr, false);
  return j.is_object() ? j["usage"] : Json();
}

// The value of a served-model metric line `name{...} value` in the Prometheus text.
double MetricValue(const std::string& text, const std::string& name) {
  std::smatch m;
  const std::regex re("\\n" + name + "\\{[^}]*\\} ([0-9.e+-]+)");
  return std::regex_search(text, m, re) ? std::stod(m[1]) : -1;
}

class StatusPage : public ::testing::Test {
 protected:
  // API keys on, metrics.require_auth off: the status page is open, as /metrics is.
  static void SetUpTestSuite() {
    DaemonOptions o;
    o.tables = "  tier: dram\n";
    o.max_running_seqs = 8;
    o.server_yaml = std::string("  api_keys: [\"") + kKey + "\"]\n";
    SharedDaemon::Start(o);
  }
  static void TearDownTestSuite() { SharedDaemon::Stop(); }
  static const std::string& http() { return SharedDaemon::daemon->http_address(); }
};

TEST_F(StatusPage, StatusJsonHasTheSchemaAndMovesWithARequest) {
  const Json a = Status(http());
  ASSERT_TRUE(a.is_object());
  EXPECT_TRUE(a["version"].is_string());
  EXPECT_TRUE(a["uptime_s"].is_number());
  const Json& m = a["model"];
  EXPECT_EQ(m["name"], "synth:tiny");
  EXPECT_EQ(m["architecture"], "llama");
  EXPECT_EQ(m["weight_format"], "bf16");
  EXPECT_EQ(m["engram_variant"], "paper");
  for (const char* k : {"num_hidden_layers", "hidden_size", "vocab_size", "max_model_len"}) {
    EXPECT_TRUE(m[k].is_number_integer()) << k << ": " << m;
  }
  ASSERT_TRUE(m["engram_layers"].is_array());
  ASSERT_FALSE(m["engram_layers"].empty());
  const Json& t = a["tables"];
  EXPECT_EQ(t["tier"], "dram");
  EXPECT_EQ(t["transfer"], "copy");
  EXPECT_EQ(t["prefetch"], true);
  for (const char* k : {"hot_cache_bytes", "resident_bytes", "row_cache_hits", "row_cache_misses",
                        "nvme_reads", "nvme_read_retries"}) {
    EXPECT_TRUE(t[k].is_number_integer()) << k << ": " << t;
  }
  EXPECT_GT(t["resident_bytes"].get<int64_t>(), 0);
  const Json& s = a["serving"];
  for (const char* k : {"requests_running", "requests_waiting", "requests_finished",
                        "requests_rejected", "prompt_tokens_total", "generation_tokens_total",
                        "steps", "kv_blocks_total", "kv_blocks_reserved"}) {
    EXPECT_TRUE(s[k].is_number_integer()) << k << ": " << s;
  }
  EXPECT_TRUE(s["kv_cache_usage"].is_number());
  EXPECT_TRUE(a["engram"]["step_s"].is_number());
  EXPECT_TRUE(a["engram"]["estimated_throughput_loss"].is_number());
  ASSERT_EQ(a["engram"]["layers"].size(), m["engram_layers"].size());
  for (size_t i = 0; i < m["engram_layers"].size(); ++i) {
    const Json& l = a["engram"]["layers"][i];
    EXPECT_EQ(l["layer"], m["engram_layers"][i]);
    for (const char* k : {"rows_requested", "rows_unique", "bytes_moved"}) {
      EXPECT_TRUE(l[k].is_number_integer()) << k << ": " << l;
    }
    for (const char* k :
         {"hot_cache_hit_ratio", "transfer_s", "stall_s", "overlap", "estimated_loss"}) {
      EXPECT_TRUE(l[k].is_number()) << k << ": " << l;
    }
  }

  const Json usage = Complete(http(), 12);
  ASSERT_TRUE(usage.is_object());
  const Json b = Status(http());
  ASSERT_TRUE(b.is_object());
  EXPECT_GT(b["uptime_s"].get<double>(), a["uptime_s"].get<double>());
  EXPECT_EQ(b["serving"]["generation_tokens_total"].get<int64_t>() -
                a["serving"]["generation_tokens_total"].get<int64_t>(),
            12);
  EXPECT_EQ(b["serving"]["prompt_tokens_total"].get<int64_t>() -
                a["serving"]["prompt_tokens_total"].get<int64_t>(),
            usage["prompt_tokens"].get<int64_t>());
  EXPECT_EQ(b["serving"]["requests_finished"].get<int64_t>() -
                a["serving"]["requests_finished"].get<int64_t>(),
            1);
  EXPECT_GT(b["serving"]["steps"].get<int64_t>(), a["serving"]["steps"].get<int64_t>());
  EXPECT_GT(b["engram"]["step_s"].get<double>(), a["engram"]["step_s"].get<double>());
  ASSERT_EQ(b["engram"]["layers"].size(), a["engram"]["layers"].size());
  for (size_t i = 0; i < b["engram"]["layers"].size(); ++i) {
    const Json& la = a["engram"]["layers"][i];
    const Json& lb = b["engram"]["layers"][i];
    EXPECT_GT(lb["rows_requested"].get<int64_t>(), la["rows_requested"].get<int64_t>()) << lb;
    EXPECT_GT(lb["bytes_moved"].get<int64_t>(), la["bytes_moved"].get<int64_t>()) << lb;
    EXPECT_GT(lb["transfer_s"].get<double>(), la["transfer_s"].get<double>()) << lb;
  }

  // The same sources as /metrics: with nothing running in between the counters agree.
  const Reply metrics = Curl(http(), "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(MetricValue(metrics.body, "engram_generation_tokens_total"),
            b["serving"]["generation_tokens_total"].get<double>());
  EXPECT_EQ(MetricValue(metrics.body, "engram_prompt_tokens_total"),
            b["serving"]["prompt_tokens_total"].get<double>());

  // HEAD as GET without a body; another method 405 with Allow.
  for (const char* path : {"/", "/status.json"}) {
    EXPECT_EQ(Capture("curl -s -o /dev/null -I -w '%{http_code}' http://" + http() + path), "200");
    const std::string out = Capture("curl -s -D - -o /dev/null -X POST http://" + http() + path);
    EXPECT_NE(out.find(" 405 "), std::string::npos) << path << ": " << out;
    EXPECT_NE(out.find("Allow: GET, HEAD"), std::string::npos) << path << ": " << out;
  }
}

TEST_F(StatusPage, PageIsSelfContainedHtml) {
  const Reply r = Curl(http(), "/");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  EXPECT_EQ(r.body.rfind("<!DOCTYPE html>", 0), 0u) << r.body.substr(0, 200);
  EXPECT_NE(r.body.find("status.json"), std::string::npos);
  // Nothing fetched from elsewhere: no absolute URL at all, and every src/href a data: URL.
  EXPECT_EQ(r.body.find("http://"), std::string::npos);
  EXPECT_EQ(r.body.find("https://"), std::string::npos);
  EXPECT_EQ(r.body.find("//cdn"), std::string::npos);
  const std::regex ref("(src|href)\\s*=\\s*[\"']([^\"']*)[\"']");
  for (auto it = std::sregex_iterator(r.body.begin(), r.body.end(), ref);
       it != std::sregex_iterator(); ++it) {
    EXPECT_EQ((*it)[2].str().rfind("data:", 0), 0u) << (*it)[0];
  }
}

// The value of the attribute `name="..."` in an element's opening tag.
std::string Attr(const std::string& element, const std::string& name) {
  std::smatch m;
  const std::regex re(" " + name + "=\"([^\"]*)\"");
  return std::regex_search(element, m, re) ? m[1].str() : std::string("<missing>");
}

TEST_F(StatusPage, HeadlessChromiumRendersTheLiveNumbers) {
  if (Shell("command -v chromium") != 0) {
    GTEST_SKIP() << "chromium is not installed (scripts/setup.sh installs Debian's chromium)";
  }
  // A little load: two clients back to back until the page has been read.
  std::atomic<bool> stop{false};
  std::vector<std::thread> load;
  for (int c = 0; c < 2; ++c) {
    load.emplace_back([&] {
      while (!stop.load()) Complete(http(), 24);
    });
  }
  char tmpl[] = "/tmp/engram-chromium-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string profile = tmpl;
  const Json before = Status(http());
  int rc = 0;
  // Virtual time: the page's 1 s poll timer fires five times or so without waiting in real time
  // (virtual time stops while a fetch is in flight). Console messages go to stderr.
  const std::string dom = Capture(
      "timeout -k 5 90 chromium --headless=new --no-sandbox --disable-gpu --user-data-dir=" +
          profile + " --enable-logging=stderr --v=0 --virtual-time-budget=5000 --dump-dom http://" +
          http() + "/ 2>" + profile + "/stderr.log",
      &rc);
  const Json after = Status(http());
  stop = true;
  for (auto& t : load) t.join();
  const std::string log = Capture("cat " + profile + "/stderr.log");
  std::filesystem::remove_all(profile);
  ASSERT_EQ(rc, 0) << log;
  ASSERT_TRUE(before.is_object() && after.is_object());

  // No uncaught exception and no console error from the page.
  EXPECT_EQ(log.find("Uncaught"), std::string::npos) << log;
  EXPECT_EQ(log.find(":CONSOLE"), std::string::npos) << log;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(dom, m, std::regex("<div id=\"status\"[^>]*>"))) << dom;
  const std::string status = m[0];
  EXPECT_EQ(Attr(status, "data-errors"), "") << status;
  EXPECT_GE(std::stoi(Attr(status, "data-polls")), 3) << status;
  // What the page drew lies between the two snapshots taken around it.
  for (const char* k : {"generation_tokens_total", "prompt_tokens_total"}) {
    std::string attr = std::string("data-") + k;
    std::replace(attr.begin(), attr.end(), '_', '-');
    const int64_t v = std::stoll(Attr(status, attr));
    EXPECT_GE(v, before["serving"][k].get<int64_t>()) << k;
    EXPECT_LE(v, after["serving"][k].get<int64_t>()) << k;
  }
  EXPECT_GT(after["serving"]["generation_tokens_total"].get<int64_t>(),
            before["serving"]["generation_tokens_total"].get<int64_t>());
  const double up = std::stod(Attr(status, "data-uptime-s"));
  EXPECT_GE(up, before["uptime_s"].get<double>());
  EXPECT_LE(up, after["uptime_s"].get<double>());
  EXPECT_GE(std::stod(Attr(status, "data-generation-tps")), 0.0) << status;
  EXPECT_GE(std::stoi(Attr(status, "data-requests-running")), 0);
  std::string layers;
  for (const Json& id : after["model"]["engram_layers"]) {
    layers += (layers.empty() ? "" : ",") + std::to_string(id.get<int>());
  }
  EXPECT_EQ(Attr(status, "data-layers"), layers);
  // Every chart has drawn points (the rate charts one fewer than polls).
  int charts = 0;
  const std::regex chart(
      "<svg[^>]* data-chart=\"([a-z]+)\"[^>]* data-points=\"([0-9]+)\"[^>]*>(.*?)</svg>");
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), chart); it != std::sregex_iterator();
       ++it) {
    ++charts;
    EXPECT_GE(std::stoi((*it)[2]), 2) << (*it)[1];
    EXPECT_NE((*it)[3].str().find("<polyline"), std::string::npos) << (*it)[0];
  }
  EXPECT_EQ(charts, 6) << dom;
}

// With metrics.require_auth the status page needs the key too, as /metrics does.
TEST(StatusPageAuth, FollowsMetricsRequireAuth) {
  DaemonOptions o;
  o.server_yaml = std::string("  api_keys: [\"") + kKey + "\"]\n";
  o.extra_yaml = "metrics:\n  require_auth: true\n";
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const std::string http = (*d)->http_address();
  for (const char* path : {"/", "/status.json", "/metrics"}) {
    EXPECT_EQ(Curl(http, path).status, 401) << path;
    EXPECT_EQ(Curl(http, path, kAuth).status, 200) << path;
  }
  EXPECT_EQ(Curl(http, "/health").status, 200);
  EXPECT_EQ((*d)->Stop(), 0) << (*d)->StderrLog();
}

}  // namespace
}  // namespace engram::testing
