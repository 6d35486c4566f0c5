// The HTTP front door of a real engramd on loopback, driven by real clients: curl (Debian)
// and the official OpenAI Node SDK (npm `openai`, tests/integration/openai_sdk_test.mjs):
// completions whole and streamed, errors, 64 concurrent streams with random disconnects (every
// request accounted for on both sides), /health through a drain, and bench serve --http.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "../support/loopback_http.h"
#include "../support/shell.h"
#include "rpc_helpers.h"
#include "shared_daemon.h"

namespace engram::testing {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// curl POST of a JSON body; returns the body, *status the HTTP status.
std::string CurlPost(const std::string& http, const std::string& path, const Json& body,
                     int* status = nullptr, const std::string& extra = "") {
  int rc = 0;
  std::string out = Capture("curl -sS -N --max-time 60 -w '\\n%{http_code}' " + extra +
                                " -H 'Content-Type: application/json' --data-binary " +
                                Quote(body.dump()) + " http://" + http + path,
                            &rc);
  EXPECT_EQ(rc, 0) << "curl failed: " << out;
  const size_t nl = out.rfind('\n');
  if (status) *status = nl == std::string::npos ? 0 : std::atoi(out.c_str() + nl + 1);
  return nl == std::string::npos ? out : out.substr(0, nl);
}

class HttpFrontDoor : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    DaemonOptions o;
    o.backend_threads = 1;
    o.max_running_seqs = 16;
    o.max_tokens_default = 16;
    SharedDaemon::Start(o);
  }
  static void TearDownTestSuite() { SharedDaemon::Stop(); }
  static const std::string& http() { return SharedDaemon::daemon->http_address(); }
};

TEST_F(HttpFrontDoor, CurlWholeAndStreamedAgree) {
  ASSERT_FALSE(http().empty());
  const Json req = {{"prompt", "Engram tables live in host memory"},
                    {"max_tokens", 10},
                    {"temperature", 0},
                    {"ignore_eos", true}};
  int status = 0;
  const Json whole = Json::parse(CurlPost(http(), "/v1/completions", req, &status));
  ASSERT_EQ(status, 200) << whole;
  Json s = req;
  s["stream"] = true;
  const std::string events = CurlPost(http(), "/v1/completions", s, &status);
  ASSERT_EQ(status, 200);
  std::string text;
  size_t pos = 0;
  bool done = false;
  while ((pos = events.find("data: ", pos)) != std::string::npos) {
    const size_t end = events.find("\n\n", pos);
    const std::string data = events.substr(pos + 6, end - pos - 6);
    pos = end;
    if (data == "[DONE]") {
      done = true;
      break;
    }
    const Json chunk = Json::parse(data);
    for (const Json& c : chunk["choices"]) text += c["text"].get<std::string>();
  }
  EXPECT_TRUE(done) << events;
  EXPECT_EQ(text, whole["choices"][0]["text"]);
  EXPECT_EQ(whole["usage"]["completion_tokens"], 10);

  // 4xx bodies through a real client.
  const Json bad = Json::parse(
      CurlPost(http(), "/v1/completions", {{"prompt", "x"}, {"temperature", "hot"}}, &status));
  EXPECT_EQ(status, 400);
  EXPECT_EQ(bad["error"]["param"], "temperature");
  CurlPost(http(), "/v1/completions", {{"prompt", "x"}, {"model", "nope"}}, &status);
  EXPECT_EQ(status, 404);
  int rc = 0;
  const std::string too_big = Capture(
      "head -c 9000000 /dev/zero | tr '\\0' ' ' | curl -s -o /dev/null -w '%{http_code}' "
      "--data-binary @- http://" +
          http() + "/v1/completions",
      &rc);
  EXPECT_EQ(too_big, "413");
}

TEST_F(HttpFrontDoor, TheOfficialOpenAiNodeSdk) {
  ASSERT_EQ(Shell("command -v node"), 0) << "scripts/setup.sh installs nodejs";
  int rc = 0;
  const std::string out = Capture("ENGRAM_HTTP_URL=http://" + http() +
                                      "/v1 ENGRAM_MODEL=synth:tiny node " ENGRAM_REPO
                                      "/tests/integration/openai_sdk_test.mjs --chat 2>&1",
                                  &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
}

// 64 streams at once, a third of them dropped by their client after a few events: every
// stream the client kept ends with [DONE], and the server ends every request (finished by a
// reason, cancelled included) with nothing left running.
TEST_F(HttpFrontDoor, SixtyFourStreamsWithRandomDisconnectsLoseNothing) {
  auto stub = v1::Engram::NewStub(SharedDaemon::channel);
  v1::Stats before;
  ASSERT_TRUE(GetStats(*stub, &before).ok());
  const int port = PortOf(http());
  constexpr int kStreams = 64;
  std::atomic<int> completed{0}, dropped{0}, failed{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937 rng(static_cast<unsigned>(i));
      const bool drop = i % 3 == 0;
      const int drop_after = 1 + static_cast<int>(rng() % 4);
      const std::string body = Json{
          {"prompt", "stream " + std::to_string(i)},
          {"max_tokens", 24},
          {"ignore_eos", true},
          {"stream", true},
          {"temperature", 0.7},
          {"seed", i}}.dump();
      const int fd = Dial(port, 60);
      if (fd < 0) {
        failed.fetch_add(1);
        return;
      }
      const std::string req =
          "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
          "Content-Length: " +
          std::to_string(body.size()) + "\r\n\r\n" + body;
      if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        failed.fetch_add(1);
        ::close(fd);
        return;
      }
      std::string got;
      char buf[4096];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) {
        got.append(buf, static_cast<size_t>(n));
        size_t events = 0;
        for (size_t p = got.find("data: "); p != std::string::npos; p = got.find("data: ", p + 1)) {
          ++events;
        }
        if (drop && static_cast<int>(events) >= drop_after) break;
      }
      ::close(fd);
      if (drop && got.find("data: [DONE]") == std::string::npos) {
        dropped.fetch_add(1);
      } else if (got.find("data: [DONE]") != std::string::npos &&
                 got.find("\"finish_reason\":\"length\"") != std::string::npos) {
        completed.fetch_add(1);
      } else {
        failed.fetch_add(1);
        ADD_FAILURE() << "stream " << i << " ended without [DONE]:\n" << got.substr(0, 2000);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(completed.load() + dropped.load(), kStreams);
  // Server side: everything submitted ended; nothing runs or waits.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  v1::Stats after;
  while (std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(GetStats(*stub, &after).ok());
    if (after.requests_running() == 0 && after.requests_waiting() == 0 &&
        after.requests_finished() - before.requests_finished() == kStreams) {
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(after.requests_running(), 0);
  EXPECT_EQ(after.requests_waiting(), 0);
  EXPECT_EQ(after.requests_finished() - before.requests_finished(), kStreams);
  EXPECT_EQ(after.kv_blocks_free(), after.kv_blocks_total());
}

TEST(HttpLifecycle, HealthIs503WhileDrainingAndTheRunningStreamCompletes) {
  DaemonOptions o;
  o.drain_grace_s = 30;
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const std::string http = (*d)->http_address();
  EXPECT_EQ(Capture("curl -s -o /dev/null -w '%{http_code}' http://" + http + "/health"), "200");
  // A long stream in flight, then SIGTERM.
  std::string events;
  std::thread client([&] {
    events =
        CurlPost(http, "/v1/completions",
                 {{"prompt", "x"}, {"max_tokens", 300}, {"ignore_eos", true}, {"stream", true}});
  });
  const auto t0 = std::chrono::steady_clock::now();
  while (Capture("curl -s http://" + http + "/metrics | grep '^engram_num_requests_running{.*} 1$'")
             .empty() &&
         std::chrono::steady_clock::now() - t0 < 20s) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE((*d)->Signal(SIGTERM).ok());
  std::string health;
  for (int i = 0; i < 200 && health != "503"; ++i) {
    health = Capture("curl -s -o /dev/null -w '%{http_code}' http://" + http + "/health");
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(health, "503");
  int status = 0;
  CurlPost(http, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 1}}, &status);
  EXPECT_EQ(status, 503);  // no new requests while draining
  client.join();
  EXPECT_NE(events.find("\"finish_reason\":\"length\""), std::string::npos) << events;
  EXPECT_NE(events.find("data: [DONE]"), std::string::npos);
  EXPECT_EQ((*d)->Stop(), 0) << (*d)->StderrLog();
}

TEST_F(HttpFrontDoor, BenchServeOverHttpLosesNothing) {
  int rc = 0;
  const std::string out =
      Capture(std::string(ENGRAM_CLI) + " bench serve --server " + SharedDaemon::daemon->address() +
                  " --http http://" + http() +
                  " --concurrency 4 --requests 8 --prompt-len 16 --max-tokens 8 --json 2>&1",
              &rc);
  ASSERT_EQ(rc, 0) << out;
  const Json j = Json::parse(out.substr(out.find('{')), nullptr, false);
  ASSERT_TRUE(j.is_object()) << out;
  EXPECT_EQ(j["protocol"], "http");
  EXPECT_EQ(j["finished"], 8);
  EXPECT_EQ(j["lost"], 0);
  EXPECT_EQ(j["short_outputs"], 0);
  EXPECT_GT(j["itl_p50_s"].get<double>(), 0);
}

// gRPC Generate with prompt.chat goes through the same chat template as
// /v1/chat/completions: the same prompt tokens as /tokenize counts, and under greedy decoding
// the same text. Bad conversations are INVALID_ARGUMENT naming the field.
TEST_F(HttpFrontDoor, GrpcChatPromptMatchesChatCompletions) {
  const Json messages = Json::array({{{"role", "system"}, {"content", "Be brief."}},
                                     {{"role", "user"}, {"content", "héllo, Engram"}}});
  v1::GenerateRequest req;
  for (const Json& m : messages) {
    v1::ChatMessage* cm = req.mutable_chat()->add_messages();
    cm->set_role(m["role"].get<std::string>());
    cm->set_content(m["content"].get<std::string>());
  }
  req.mutable_chat()->set_add_generation_prompt(true);
  req.set_max_tokens(8);
  req.set_ignore_eos(true);
  auto stub = v1::Engram::NewStub(SharedDaemon::channel);
  const StreamResult g = Generate(*stub, req);
  ASSERT_TRUE(g.status.ok()) << g.status.error_message();

  int status = 0;
  const Json tok = Json::parse(CurlPost(
      http(), "/tokenize", {{"messages", messages}, {"add_generation_prompt", true}}, &status));
  ASSERT_EQ(status, 200) << tok;
  EXPECT_EQ(g.usage.prompt_tokens(), tok["count"].get<int>());
  const Json chat = Json::parse(CurlPost(
      http(), "/v1/chat/completions",
      {{"messages", messages}, {"max_tokens", 8}, {"temperature", 0}, {"ignore_eos", true}},
      &status));
  ASSERT_EQ(status, 200) << chat;
  EXPECT_EQ(g.text, chat["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(g.usage.prompt_tokens(), chat["usage"]["prompt_tokens"].get<int>());

  v1::GenerateRequest empty;
  empty.mutable_chat();
  StreamResult e = Generate(*stub, empty);
  EXPECT_EQ(e.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(e.status.error_message().find("prompt.chat.messages is empty"), std::string::npos)
      << e.status.error_message();
  v1::GenerateRequest bad = req;
  bad.mutable_chat()->mutable_messages(1)->set_content("ok \xff");
  e = Generate(*stub, bad);
  EXPECT_EQ(e.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(e.status.error_message().find("prompt.chat.messages[1].content is not valid UTF-8"),
            std::string::npos)
      << e.status.error_message();
}

}  // namespace
}  // namespace engram::testing
