// The Prometheus endpoint of a real engramd: after one request, /metrics serves the engram_
// serving metrics with the request counted.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon_process.h"
#include "rpc_helpers.h"

namespace engram::testing {
namespace {

// GET http://127.0.0.1:port/metrics over a plain socket; the whole response.
std::string HttpGet(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

TEST(Metrics, PrometheusEndpointCountsRequests) {
  DaemonOptions o;
  o.metrics = true;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const auto line = (*d)->Line("engramd: metrics on http://127.0.0.1:");
  ASSERT_TRUE(line) << "no metrics line";
  const size_t colon = line->rfind(':');
  const int port = std::stoi(line->substr(colon + 1));
  auto stub = v1::Engram::NewStub(Connect((*d)->address()));
  const StreamResult r = Generate(*stub, IdsRequest({5, 6, 7, 8}, 6), 30);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  const std::string body = HttpGet(port);
  ASSERT_NE(body.find("200 OK"), std::string::npos) << body.substr(0, 200);
  EXPECT_NE(body.find("engram_generation_tokens_total 6"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_prompt_tokens_total 4"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_request_success_total{finished_reason=\"length\"} 1"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("engram_time_to_first_token_seconds_count 1"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_inter_token_latency_seconds_count 5"), std::string::npos) << body;
  EXPECT_NE(body.find("engram_num_requests_running 0"), std::string::npos) << body;
}

// The dram tier with a hot-row cache behind a real daemon: the row traffic reaches GetStats and
// the Prometheus endpoint, and the CUDA-graph section says graphs are off on the CPU.
TEST(Metrics, DramTierWithHotCacheReportsRowTraffic) {
  DaemonOptions o;
  o.metrics = true;
  o.tables = "  tier: dram\n  hot_cache_bytes: 65536\n";
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const auto line = (*d)->Line("engramd: metrics on http://127.0.0.1:");
  ASSERT_TRUE(line) << "no metrics line";
  const int port = std::stoi(line->substr(line->rfind(':') + 1));
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

}  // namespace
}  // namespace engram::testing
