// The daemon's life: health NOT_SERVING while the model loads and SERVING after, and the
// drain on SIGTERM (running streams finish within the grace, new requests get UNAVAILABLE,
// streams still running when the grace ends get UNAVAILABLE, the process exits 0).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "daemon_process.h"
#include "rpc_helpers.h"

namespace engram::testing {
namespace {

// synth:small without a tokenizer: slow enough (a few seconds to synthesize its tables, about
// 10 ms a decode step on 2 cores) to observe loading and to signal mid-stream.
DaemonOptions SlowModel(double table_gb) {
  DaemonOptions o;
  o.model = fmt::format("synth:small?table_gb={}", table_gb);
  o.tokenizer.clear();
  o.backend_threads = 0;
  o.kv_tokens = 16384;
  o.max_running_seqs = 4;
  return o;
}

TEST(Health, NotServingWhileLoadingThenServing) {
  DaemonOptions o = SlowModel(0.5);
  o.wait_ready = false;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  auto channel = Connect((*d)->address());
  grpc::Status call;
  const Health before = HealthCheck(channel, &call);
  ASSERT_TRUE(call.ok()) << call.error_message();
  // The model RPCs refuse while loading.
  auto stub = v1::Engram::NewStub(channel);
  const StreamResult early = Generate(*stub, IdsRequest({1, 2, 3}, 2), 10);
  ASSERT_TRUE((*d)->WaitReady(120).ok()) << (*d)->StderrLog();
  if (before == Health::kServing) {
    GTEST_SKIP() << "the model loaded before the first health check (machine too fast)";
  }
  EXPECT_EQ(before, Health::kNotServing);
  EXPECT_EQ(early.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << early.status.error_message();
  EXPECT_EQ(HealthCheck(channel, &call), Health::kServing);
  EXPECT_TRUE(call.ok()) << call.error_message();
  EXPECT_TRUE(Generate(*stub, IdsRequest({1, 2, 3}, 2), 30).status.ok());
  // An unknown service name is NOT_FOUND (gRPC's default health service).
  HealthCheck(channel, &call, "no.such.Service");
  EXPECT_EQ(call.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ((*d)->Stop(), 0);
}

// Reads a long stream on its own thread; `started` is set after the first few messages.
struct BackgroundStream {
  std::promise<void> started_promise;
  std::future<StreamResult> result;

  BackgroundStream(const std::string& address, v1::GenerateRequest req, double timeout_s) {
    std::shared_future<void> started_future = started_promise.get_future().share();
    result = std::async(std::launch::async, [this, address, req, timeout_s] {
      auto stub = v1::Engram::NewStub(Connect(address));
      int seen = 0;
      return Generate(*stub, req, timeout_s,
                      [&](const v1::GenerateResponse&, grpc::ClientContext&) {
                        if (++seen == 3) started_promise.set_value();
                      });
    });
    started = started_future;
  }
  // True when the stream got its first messages within `timeout_s`.
  bool WaitStarted(double timeout_s) {
    return started.wait_for(std::chrono::duration<double>(timeout_s)) == std::future_status::ready;
  }
  std::shared_future<void> started;
};

TEST(Drain, RunningStreamCompletesAndNewRequestsAreRefused) {
  DaemonOptions o = SlowModel(0.2);
  o.drain_grace_s = 180;  // ample under the sanitizers too (~2 s in Release)
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const int kTokens = 200;  // about 2 s of decoding
  BackgroundStream stream((*d)->address(), IdsRequest({7, 8, 9, 10}, kTokens), 180);
  ASSERT_TRUE(stream.WaitStarted(30)) << (*d)->StderrLog();
  ASSERT_TRUE((*d)->Signal(SIGTERM).ok());
  // While draining: health says NOT_SERVING and new requests are refused.
  auto channel = Connect((*d)->address());
  auto stub = v1::Engram::NewStub(channel);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const StreamResult refused = Generate(*stub, IdsRequest({1, 2}, 2), 10);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();
  grpc::Status call;
  const Health h = HealthCheck(channel, &call);
  if (call.ok()) {
    EXPECT_EQ(h, Health::kNotServing);
  }
  ASSERT_EQ(stream.result.wait_for(std::chrono::seconds(180)), std::future_status::ready);
  const StreamResult r = stream.result.get();
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.finish, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(static_cast<int>(r.ids.size()), kTokens);
  const auto ws = (*d)->WaitExit(30);
  ASSERT_TRUE(ws.has_value()) << "engramd did not exit after the drain";
  EXPECT_TRUE(WIFEXITED(*ws) && WEXITSTATUS(*ws) == 0) << ExitDescription(ws) << "\n"
                                                       << (*d)->StderrLog();
}

TEST(Drain, GraceEndEndsLongStreamsWithUnavailable) {
  DaemonOptions o = SlowModel(0.2);
  o.drain_grace_s = 0.2;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  BackgroundStream stream((*d)->address(), IdsRequest({7, 8, 9, 10}, 4000), 120);
  ASSERT_TRUE(stream.WaitStarted(30)) << (*d)->StderrLog();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*d)->Signal(SIGTERM).ok());
  ASSERT_EQ(stream.result.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  const StreamResult r = stream.result.get();
  const double ended_after_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
  EXPECT_LT(r.ids.size(), 4000u);
  EXPECT_LT(ended_after_s, 10) << "the stream should end soon after the 0.2 s grace";
  const auto ws = (*d)->WaitExit(30);
  ASSERT_TRUE(ws.has_value()) << "engramd did not exit after the drain";
  EXPECT_TRUE(WIFEXITED(*ws) && WEXITSTATUS(*ws) == 0) << ExitDescription(ws) << "\n"
                                                       << (*d)->StderrLog();
}

// gRPC's SO_REUSEPORT default let a second engramd start on the same port and silently take
// half of the connections; it is now refused at start, naming the address.
TEST(Start, ASecondDaemonOnTheSamePortIsRefused) {
  auto first = DaemonProcess::Start(DaemonOptions{});
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  DaemonOptions o;
  o.listen = (*first)->address();
  o.start_timeout_s = 30;
  auto second = DaemonProcess::Start(o);
  ASSERT_FALSE(second.ok()) << "a second engramd started on " << o.listen;
  EXPECT_NE(second.status().message().find(o.listen + " is already in use"), std::string::npos)
      << second.status().message();
  auto stub = v1::Engram::NewStub(Connect((*first)->address()));
  for (int i = 0; i < 6; ++i) {  // every request reaches the first daemon
    EXPECT_TRUE(Generate(*stub, IdsRequest({1, 2, 3}, 2), 30).status.ok());
  }
  EXPECT_EQ((*first)->Stop(), 0);
}

TEST(Signals, SighupIsIgnoredAndLogged) {
  auto d = DaemonProcess::Start(DaemonOptions{});
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE((*d)->Signal(SIGHUP).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE((*d)->WaitExit(0.1).has_value()) << "SIGHUP ended engramd";
  auto stub = v1::Engram::NewStub(Connect((*d)->address()));
  EXPECT_TRUE(Generate(*stub, IdsRequest({1, 2, 3}, 2), 30).status.ok());
  EXPECT_TRUE((*d)->LineContaining("SIGHUP ignored").has_value());
  EXPECT_EQ((*d)->Stop(), 0);
}

TEST(Drain, ASecondSigtermEndsTheDrainAtOnce) {
  DaemonOptions o = SlowModel(0.2);
  o.drain_grace_s = 120;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  BackgroundStream stream((*d)->address(), IdsRequest({7, 8, 9, 10}, 4000), 180);
  ASSERT_TRUE(stream.WaitStarted(30)) << (*d)->StderrLog();
  ASSERT_TRUE((*d)->Signal(SIGTERM).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*d)->Signal(SIGTERM).ok());
  ASSERT_EQ(stream.result.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  const StreamResult r = stream.result.get();
  const double ended_after_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("second stop signal"), std::string::npos)
      << r.status.error_message();
  EXPECT_LT(ended_after_s, 30) << "the second SIGTERM should end a 120 s drain";
  const auto ws = (*d)->WaitExit(30);
  ASSERT_TRUE(ws.has_value()) << "engramd did not exit";
  EXPECT_TRUE(WIFEXITED(*ws) && WEXITSTATUS(*ws) == 0) << ExitDescription(ws);
}

// `engramd --check-config FILE`: exit code and stderr.
std::pair<int, std::string> CheckConfig(const std::string& yaml) {
  char dir[] = "/tmp/engramd-check-XXXXXX";
  if (!::mkdtemp(dir)) return {-1, "mkdtemp failed"};
  const std::string cfg = std::string(dir) + "/model.yaml", err = std::string(dir) + "/err";
  std::ofstream(cfg) << yaml;
  const std::string cmd = fmt::format("{} --check-config {} >/dev/null 2>{}", ENGRAMD, cfg, err);
  const int ws = std::system(cmd.c_str());
  std::ifstream in(err);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove_all(dir);
  return {WIFEXITED(ws) ? WEXITSTATUS(ws) : -1, text};
}

// What the start would find but the file alone does not show.
TEST(CheckConfig, RefusesWhatTheStartWouldRefuse) {
  struct Case {
    std::string yaml, needle;
  };
  const Case cases[] = {
      {"model: synth:tiny\nserver:\n  listen: 256.0.0.1:0\n  allow_insecure_remote: true\n",
       "server.listen: \"256.0.0.1:0\": \"256.0.0.1\" is not an IPv4 address"},
      {"model: synth:tiny\nmetrics:\n  listen: 300.1.1.1:0\n", "metrics.listen"},
      {"model: synth:tiny\ntables:\n  tier: dram\n  numa: bind\n  numa_node: 1023\n",
       "tables.numa_node: 1023 is not a NUMA node of this machine"},
      {"model: /dev/zero\n", "model"},
  };
  for (const Case& c : cases) {
    const auto [code, err] = CheckConfig(c.yaml);
    EXPECT_EQ(code, 2) << c.yaml << err;
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.yaml << "\nstderr: " << err;
  }
  const auto [code, err] = CheckConfig("model: synth:tiny\nserver:\n  listen: 127.0.0.1:0\n");
  EXPECT_EQ(code, 0) << err;
  const auto [dev_code, dev_err] = [] {
    const std::string cmd = fmt::format("{} --check-config /dev/zero 2>&1", ENGRAMD);
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    size_t n;
    while (p && (n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int ws = p ? ::pclose(p) : -1;
    return std::pair<int, std::string>{WIFEXITED(ws) ? WEXITSTATUS(ws) : -1, out};
  }();
  EXPECT_EQ(dev_code, 2) << dev_err;
  EXPECT_NE(dev_err.find("expected a regular file"), std::string::npos) << dev_err;
}

// A model file truncated under a serving engramd (e.g. rewritten in place) used to kill it with
// SIGBUS. Now the step that read the missing pages ends its requests with DATA_LOSS naming the
// file, new requests get UNAVAILABLE saying why, health turns NOT_SERVING, and the process
// keeps answering.
TEST(ModelFiles, TruncationWhileServingFailsRequestsNotTheProcess) {
  char tmpl[] = "/tmp/engramd-trunc-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string pack =
      fmt::format("{} pack synth --preset tiny --out {}/m >/dev/null 2>&1", ENGRAM_CLI, dir);
  ASSERT_EQ(std::system(pack.c_str()), 0);
  DaemonOptions o;
  o.model = dir + "/m";
  o.tokenizer.clear();
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  auto channel = Connect((*d)->address());
  auto stub = v1::Engram::NewStub(channel);
  ASSERT_TRUE(Generate(*stub, IdsRequest({5, 6, 7}, 3), 30).status.ok());
  for (const auto& e : std::filesystem::directory_iterator(dir + "/m")) {
    if (e.path().extension() == ".safetensors") {
      ASSERT_EQ(::truncate(e.path().c_str(), 0), 0) << e.path();
    }
  }
  // Other ids than before: the embedding rows read are pages not touched yet.
  const StreamResult r = Generate(*stub, IdsRequest({100, 200, 300, 400}, 3), 30);
  EXPECT_TRUE(r.status.error_code() == grpc::StatusCode::DATA_LOSS ||
              r.status.error_code() == grpc::StatusCode::UNAVAILABLE)
      << r.status.error_code() << ": " << r.status.error_message();
  EXPECT_NE(r.status.error_message().find(".safetensors: the file"), std::string::npos)
      << r.status.error_message();
  const StreamResult later = Generate(*stub, IdsRequest({1, 2}, 2), 30);
  EXPECT_EQ(later.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << later.status.error_message();
  EXPECT_NE(later.status.error_message().find("the model cannot serve"), std::string::npos)
      << later.status.error_message();
  grpc::Status call;
  Health h = Health::kServing;
  for (int i = 0; i < 40 && h == Health::kServing; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    h = HealthCheck(channel, &call);
  }
  EXPECT_EQ(h, Health::kNotServing);
  EXPECT_FALSE((*d)->WaitExit(0.1).has_value()) << "engramd died: " << (*d)->StderrLog();
  EXPECT_EQ((*d)->Stop(), 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace engram::testing
