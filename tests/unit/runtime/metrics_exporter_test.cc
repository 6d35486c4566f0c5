// MetricsExporter on an in-process EngineLoop: a malformed metrics.listen is a clear
// INVALID_ARGUMENT (it once threw from std::stoi), and a good one serves the metrics.
#include "runtime/metrics_exporter.h"

#include "../../support/loopback_http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "model/model_files.h"

namespace engram {
namespace {

std::unique_ptr<EngineLoop> MakeLoop() {
  auto files = OpenModel("synth:tiny");
  EXPECT_TRUE(files.ok()) << files.status().ToString();
  EngineOptions opt;
  opt.max_seqs = 2;
  opt.kv_tokens = 1024;
  opt.backend.threads = 1;
  auto e = Engine::Create(std::move(files).value(), opt);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::make_unique<EngineLoop>(std::move(e).value(), nullptr, ServingOptions{});
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
  EXPECT_NE(r.find("engram_generation_tokens_total 0"), std::string::npos) << r;
  EXPECT_EQ(Get((*m)->port(), "/metrics/").rfind("HTTP/1.1 404", 0), 0u);
}

}  // namespace
}  // namespace engram
