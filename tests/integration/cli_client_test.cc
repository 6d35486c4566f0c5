// The `engram` client commands (generate --server, stats, bench serve, tokenize, detokenize)
// against a real engramd.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "shared_daemon.h"

#ifndef ENGRAM_CLI
#error "ENGRAM_CLI (the path of the engram binary) must be defined"
#endif

namespace engram::testing {
namespace {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q.append("'\\''");
    } else {
      q.push_back(c);
    }
  }
  q.push_back('\'');
  return q;
}

// Runs `engram ARGS` (bounded by `timeout 120`), capturing stdout and stderr.
CliResult RunCli(const std::vector<std::string>& args) {
  char err_path[] = "/tmp/engram-cli-err-XXXXXX";
  const int fd = ::mkstemp(err_path);
  if (fd >= 0) ::close(fd);
  std::string cmd = "timeout 120 ";
  cmd.append(Quote(ENGRAM_CLI));
  for (const std::string& a : args) cmd.append(" ").append(Quote(a));
  cmd.append(" 2>").append(err_path);
  CliResult r;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    const int ws = ::pclose(p);
    r.exit_code = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
  }
  std::ifstream in(err_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  std::remove(err_path);
  return r;
}

class Cli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { SharedDaemon::Start(DaemonOptions()); }
  static void TearDownTestSuite() { SharedDaemon::Stop(); }
  void SetUp() override { ASSERT_NE(SharedDaemon::daemon, nullptr) << "the daemon did not start"; }
  static std::string address() { return SharedDaemon::daemon->address(); }
};

TEST_F(Cli, GenerateStreamsTextAndPrintsUsage) {
  const CliResult r = RunCli({"generate", "--server", address(), "--prompt", "Hello there",
                              "--max-tokens", "8", "--ignore-eos", "--timeout-s", "60"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
  EXPECT_NE(r.err.find("finish: length"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("completion 8 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("TTFT"), std::string::npos) << r.err;
}

TEST_F(Cli, GenerateFromIdsMatchesTheRpc) {
  const CliResult r = RunCli({"generate", "--server", address(), "--prompt-ids", "10,20,30",
                              "--max-tokens", "6", "--ignore-eos"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto stub = v1::Engram::NewStub(SharedDaemon::channel);
  const StreamResult rpc = Generate(*stub, IdsRequest({10, 20, 30}, 6));
  ASSERT_TRUE(rpc.status.ok());
  EXPECT_EQ(r.out, rpc.text + "\n");
}

TEST_F(Cli, GenerateErrorPrintsTheCodeAndExits1) {
  const CliResult r =
      RunCli({"generate", "--server", address(), "--prompt-ids", "1,2", "--top-p", "1.5"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("INVALID_ARGUMENT"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("top_p"), std::string::npos) << r.err;
  const CliResult deadline =
      RunCli({"generate", "--server", address(), "--prompt-ids", "1,2", "--max-tokens", "2000",
              "--ignore-eos", "--timeout-s", "0.05"});
  EXPECT_EQ(deadline.exit_code, 1);
  EXPECT_NE(deadline.err.find("DEADLINE_EXCEEDED"), std::string::npos) << deadline.err;
}

TEST_F(Cli, OfflineGenerateStillWorks) {
  const CliResult r =
      RunCli({"generate", "--model", "synth:tiny", "--prompt-ids", "1,2,3", "--max-tokens", "3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.front(), '[') << r.out;
}

TEST_F(Cli, StatsPrintsTablesAndJson) {
  const CliResult r = RunCli({"stats", "--server", address()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"architecture", "llama", "max context", "requests finished",
                        "KV blocks free/total", "engram layers"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " missing in\n" << r.out;
  }
  const CliResult j = RunCli({"stats", "--server", address(), "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const auto doc = nlohmann::json::parse(j.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << j.out;
  EXPECT_EQ(doc["model"]["max_context"], 2048);
  EXPECT_TRUE(doc["stats"].contains("kv_blocks_total"));
}

TEST_F(Cli, BenchServeAccountsForEveryRequest) {
  const CliResult r =
      RunCli({"bench", "serve", "--server", address(), "--concurrency", "4", "--requests", "12",
              "--prompt-len", "16", "--max-tokens", "8", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const auto doc = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << r.out;
  EXPECT_EQ(doc["started"], 12);
  EXPECT_EQ(doc["finished"], 12);
  EXPECT_EQ(doc["lost"], 0);
  EXPECT_EQ(doc["short_outputs"], 0);
  EXPECT_GT(doc["output_tok_s"].get<double>(), 0);
  EXPECT_GT(doc["ttft_p50_s"].get<double>(), 0);
  EXPECT_GE(doc["itl_p99_s"].get<double>(), doc["itl_p50_s"].get<double>());
}

TEST_F(Cli, TokenizeAndDetokenizeLocally) {
  const std::string tok = FixtureTokenizer();
  const CliResult t = RunCli({"tokenize", "--tokenizer", tok, "--text", "Hello world"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const auto ids = nlohmann::json::parse(t.out, nullptr, false);
  ASSERT_TRUE(ids.is_array()) << t.out;
  ASSERT_FALSE(ids.empty());
  // Same ids as the daemon's Tokenize.
  auto stub = v1::Engram::NewStub(SharedDaemon::channel);
  v1::TokenizeRequest req;
  req.set_text("Hello world");
  v1::TokenizeResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(10));
  ASSERT_TRUE(stub->Tokenize(&ctx, req, &resp).ok());
  std::string list;
  ASSERT_EQ(ids.size(), static_cast<size_t>(resp.token_ids_size()));
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(ids[i].get<int>(), resp.token_ids(static_cast<int>(i)));
    if (i) list.push_back(',');
    list.append(std::to_string(ids[i].get<int>()));
  }
  const CliResult d = RunCli({"detokenize", "--tokenizer", tok, "--ids", list});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(d.out, "Hello world\n");
}

}  // namespace
}  // namespace engram::testing
