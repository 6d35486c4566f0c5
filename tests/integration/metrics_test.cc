// The Prometheus endpoint of a real engramd: after one request, /metrics serves the engram_
// serving metrics with the request counted; the endpoint survives peers that reset, is not
// held up by idle or slow clients, routes exactly /metrics and refuses oversized requests.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <regex>
#include <thread>
#include <vector>

#include "../support/loopback_http.h"
#include "daemon_process.h"
#include "rpc_helpers.h"

namespace engram::testing {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// GET http://127.0.0.1:port/metrics over a plain socket; the whole response.
std::string HttpGet(int port, double timeout_s = 10) {
  return Exchange(port, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", timeout_s);
}

// The body with the serving metrics' vLLM labels (model_name, engine) taken out, so a check can
// say `engram_prompt_tokens_total 4` and `engram_request_success_total{finished_reason=...}`.
std::string WithoutServedLabels(const std::string& body) {
  return std::regex_replace(
      std::regex_replace(body, std::regex(R"(\{model_name="[^"]*",engine="0"\})"), ""),
      std::regex(R"(model_name="[^"]*",engine="0",)"), "");
}

// The metrics port from the daemon's "engramd: metrics on http://127.0.0.1:PORT/metrics".
int MetricsPort(const DaemonProcess& d) {
  const auto line = d.Line("engramd: metrics on http://127.0.0.1:");
  if (!line) return 0;
  return std::atoi(line->c_str() + line->rfind(':') + 1);
}

TEST(Metrics, PrometheusEndpointCountsRequests) {
  DaemonOptions o;
  o.metrics = true;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const int port = MetricsPort(**d);
  ASSERT_GT(port, 0) << "no metrics line";
  auto stub = v1::Engram::NewStub(Connect((*d)->address()));
  const StreamResult r = Generate(*stub, IdsRequest({5, 6, 7, 8}, 6), 30);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const std::string raw = HttpGet(port);
  ASSERT_NE(raw.find("200 OK"), std::string::npos) << raw.substr(0, 200);
  EXPECT_NE(raw.find("engram_num_requests_waiting{model_name=\""), std::string::npos) << raw;
  const std::string body = WithoutServedLabels(raw);
  EXPECT_NE(body.find("engram_generation_tokens_total 6"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_prompt_tokens_total 4"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_request_success_total{finished_reason=\"length\"} 1"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("engram_time_to_first_token_seconds_count 1"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_inter_token_latency_seconds_count 5"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_num_requests_running 0"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_requests_nonfinite_logits_total 0"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_model_files_intact 1"), std::string::npos) << body;
}

// The dram tier with a hot-row cache behind a real daemon: the row traffic reaches GetStats and
// the Prometheus endpoint, and the CUDA-graph section says graphs are off on the CPU.
TEST(Metrics, DramTierWithHotCacheReportsRowTraffic) {
  DaemonOptions o;
  o.metrics = true;
  o.tables = "  tier: dram\n  hot_cache_bytes: 65536\n";
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const int port = MetricsPort(**d);
  ASSERT_GT(port, 0) << "no metrics line";
  auto stub = v1::Engram::NewStub(Connect((*d)->address()));
  // The same prompt twice: the second request's rows come from the hot cache.
  std::vector<int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back(5 + i % 7);
  for (int k = 0; k < 2; ++k) {
    const StreamResult r = Generate(*stub, IdsRequest(ids, 8), 30);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  }

  grpc::ClientContext ctx;
  v1::GetStatsRequest req;
  v1::Stats stats;
  ASSERT_TRUE(stub->GetStats(&ctx, req, &stats).ok());
  const v1::PrefetchStats& p = stats.prefetch();
  EXPECT_EQ(p.tier(), "dram");
  EXPECT_EQ(p.transfer(), "copy");
  EXPECT_EQ(p.hot_cache_bytes(), 65536);
  ASSERT_GT(p.layers_size(), 0);
  const v1::LayerOverlap& l = p.layers(0);
  EXPECT_EQ(l.rows_requested() % 8, 0);  // tiny: 8 heads per token
  EXPECT_GT(l.unique_rows(), 0);
  EXPECT_GT(l.hot_hits(), 0);
  EXPECT_LE(l.hot_hits(), l.unique_rows());
  EXPECT_FALSE(stats.cuda_graphs().enabled());
  EXPECT_EQ(stats.cuda_graphs().replays(), 0);

  const std::string body = HttpGet(port);
  EXPECT_NE(body.find("engram_hot_cache_hits_total{layer=\""), std::string::npos) << body;
  EXPECT_NE(body.find("engram_hot_cache_hit_ratio{layer=\""), std::string::npos) << body;
  EXPECT_NE(body.find("engram_rows_unique_total{layer=\""), std::string::npos) << body;
  EXPECT_NE(body.find("engram_cuda_graph_replays_total 0"), std::string::npos) << body;
}

// Peers that connect and reset (SO_LINGER 0), before or right after sending a request: the
// server's next write would hit a reset socket (SIGPIPE once killed the daemon).
TEST(Metrics, SurvivesPeersThatReset) {
  DaemonOptions o;
  o.metrics = true;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const int port = MetricsPort(**d);
  ASSERT_GT(port, 0) << "no metrics line";
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  for (int i = 0; i < 20; ++i) {
    const int fd = Dial(port);
    if (fd < 0) break;  // refused: the daemon is gone (said below)
    const linger lg{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (i % 2 == 1) ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    ::close(fd);  // RST
    if (i % 5 == 4) std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::optional<int> exited = (*d)->WaitExit(0);
  ASSERT_FALSE(exited.has_value())
      << "engramd died: " << (WIFSIGNALED(*exited) ? ::strsignal(WTERMSIG(*exited)) : "it exited")
      << "\n"
      << (*d)->StderrLog();
  auto stub = v1::Engram::NewStub(Connect((*d)->address()));
  const StreamResult r = Generate(*stub, IdsRequest({5, 6, 7}, 3), 30);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(StatusOf(HttpGet(port)), 200);
}

// 200 idle connections and 2 that trickle a request one byte a second: scrapes are answered
// at once all the while (a server serving one connection at a time took 36 s for one).
TEST(Metrics, IdleAndSlowClientsDoNotDelayScrapes) {
  DaemonOptions o;
  o.metrics = true;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const int port = MetricsPort(**d);
  ASSERT_GT(port, 0) << "no metrics line";

  std::vector<int> idle;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < 200; ++i) {  // connects in flight, never awaited
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
    ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  }
  std::vector<int> slow;
  for (int i = 0; i < 2; ++i) {
    const int fd = Dial(port, 3);
    if (fd >= 0) slow.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t k = 0; k < req.size() && !stop; ++k) {
      for (int fd : slow) ::send(fd, &req[k], 1, MSG_NOSIGNAL);
      for (int t = 0; t < 10 && !stop; ++t) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  });
  const auto close_all = [&] {
    stop = true;
    trickle.join();
    for (int fd : idle) ::close(fd);
    for (int fd : slow) ::close(fd);
  };
  if (slow.size() != 2) {
    close_all();
    FAIL() << "the slow clients could not connect";
  }

  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // both requests half-sent
  std::vector<double> took;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    const std::string r = HttpGet(port, 5);
    took.push_back(SecondsSince(t0));
    if (StatusOf(r) != 200 || took.back() >= 5) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  close_all();
  ASSERT_EQ(took.size(), 5u) << "scrape " << took.size() << " failed after " << took.back() << " s";
  for (size_t i = 0; i < took.size(); ++i) EXPECT_LT(took[i], 5.0) << "scrape " << i;
}

// Exactly /metrics (a query string is fine), GET or HEAD; 405 for another method there, 404
// elsewhere.
TEST(Metrics, RoutesOnlyMetricsWithGetOrHead) {
  DaemonOptions o;
  o.metrics = true;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const int port = MetricsPort(**d);
  ASSERT_GT(port, 0) << "no metrics line";
  const auto request = [&](const std::string& method, const std::string& target) {
    return Exchange(port, method + " " + target +
                              " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                              "Connection: close\r\n\r\n");
  };

  const std::string head = request("HEAD", "/metrics");
  EXPECT_EQ(StatusOf(head), 200) << head;
  const size_t end = head.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos) << head;
  EXPECT_EQ(head.size(), end + 4) << "HEAD has a body: " << head;
  const size_t cl = head.find("Content-Length: ");
  ASSERT_NE(cl, std::string::npos) << head;
  EXPECT_GT(std::atoi(head.c_str() + cl + 16), 100) << head;
  EXPECT_NE(head.find("text/plain; version=0.0.4"), std::string::npos) << head;

  const std::string get = request("GET", "/metrics?x=1");
  EXPECT_EQ(StatusOf(get), 200) << get.substr(0, 300);
  EXPECT_NE(WithoutServedLabels(get).find("engram_num_requests_running 0"), std::string::npos)
      << get;

  const std::string other = request("GET", "/metricsXYZ");
  EXPECT_EQ(StatusOf(other), 404) << other;
  EXPECT_EQ(other.find("engram_"), std::string::npos) << other;
  const std::string root = request("GET", "/");
  EXPECT_EQ(StatusOf(root), 404) << root;
  EXPECT_NE(root.find("try /metrics"), std::string::npos) << root;

  const std::string post = request("POST", "/metrics");
  EXPECT_EQ(StatusOf(post), 405) << post;
  EXPECT_NE(post.find("Allow: GET, HEAD"), std::string::npos) << post;
}

// A request head larger than a connection's memory (32 KiB) is refused with a 4xx status; the
// endpoint keeps serving.
TEST(Metrics, OversizedRequestHeadIsRefused) {
  DaemonOptions o;
  o.metrics = true;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const int port = MetricsPort(**d);
  ASSERT_GT(port, 0) << "no metrics line";
  const std::string big =
      "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: " + std::string(48 << 10, 'a') + "\r\n\r\n";
  const std::string r = Exchange(port, big);
  const int status = StatusOf(r);
  EXPECT_GE(status, 400) << r.substr(0, 300);
  EXPECT_LT(status, 500) << r.substr(0, 300);
  EXPECT_FALSE((*d)->WaitExit(0).has_value()) << "engramd died";
  EXPECT_EQ(StatusOf(HttpGet(port)), 200);
}

}  // namespace
}  // namespace engram::testing
