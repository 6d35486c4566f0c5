// Fuzzes the HTTP request path of the Prometheus endpoint: a real MetricsExporter (HttpServer on
// libmicrohttpd, over an EngineLoop serving the in-memory synth:tiny model) is started once, on
// 127.0.0.1 with an ephemeral port (never any other address). Each input is sent as the raw
// bytes of one connection over loopback: connect, send, shutdown(SHUT_WR), read the reply until
// the server closes or goes quiet (kReplyMs for the first byte), close. Every 256 inputs a
// plain GET /metrics must still answer 200, so a wedged or dead server is a failure, not a quiet
// run. libmicrohttpd is a system library (not instrumented): coverage comes from our handler and
// the metrics code, while ASan/UBSan watch everything that runs in our code on the server's thread.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "model/model_files.h"
#include "runtime/engine.h"
#include "runtime/engine_loop.h"
#include "runtime/metrics_exporter.h"

namespace {

// How long to wait for the first bytes of a reply. libmicrohttpd does not notice the half-close
// of a connection whose request is incomplete (it waits for its idle timeout, 10 s), so most
// mutated inputs get no reply at all: a short wait keeps the fuzzer fast. The liveness check
// waits longer.
constexpr int kReplyMs = 250;
constexpr int kLivenessReplyMs = 5000;
constexpr int kQuietMs = 50;  // after the first bytes: this long without more ends the reply
constexpr int kLivenessEvery = 256;

struct Server {
  std::unique_ptr<engram::EngineLoop> loop;
  std::unique_ptr<engram::MetricsExporter> exporter;
};

// Started once and never destroyed: the server thread keeps running until the process exits.
Server* g_server = nullptr;

std::unique_ptr<engram::EngineLoop> MakeLoop() {
  auto files = engram::OpenModel("synth:tiny");
  if (!files.ok()) engram::fuzz::Fail("synth:tiny: " + files.status().ToString());
  engram::EngineOptions opt;
  opt.max_seqs = 2;
  opt.kv_tokens = 1024;
  opt.backend.threads = 1;
  auto engine = engram::Engine::Create(std::move(files).value(), opt);
  if (!engine.ok()) engram::fuzz::Fail("engine: " + engine.status().ToString());
  return std::make_unique<engram::EngineLoop>(std::move(engine).value(), nullptr,
                                              engram::ServingOptions{});
}

// Milliseconds left until `deadline`, at least 0.
int MsLeft(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Sends `request` on a new loopback connection, half-closes, and returns what the server sent
// before it closed or went quiet, waiting at most `reply_ms` for the first bytes.
std::string Exchange(int port, std::string_view request, int reply_ms) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) engram::fuzz::Fail("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return reply;  // refused at accept (connection limit): the liveness check notices a wedge
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(reply_ms);
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early (a refused head); read what it said
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  char buf[16384];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    // Until the first bytes: up to the deadline. Then a short quiet gap ends the reply, as an
    // HTTP/1.1 keep-alive connection stays open (libmicrohttpd notices the half-close only at
    // its idle timeout).
    const int ms = reply.empty() ? MsLeft(deadline) : std::min(kQuietMs, MsLeft(deadline));
    if (ms == 0 || ::poll(&p, 1, ms) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return reply;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engram::fuzz::QuietLogs();
  g_server = new Server;
  g_server->loop = MakeLoop();
  auto exporter = engram::MetricsExporter::Start("127.0.0.1:0", *g_server->loop);
  if (!exporter.ok()) engram::fuzz::Fail("metrics exporter: " + exporter.status().ToString());
  g_server->exporter = std::move(exporter).value();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static uint64_t runs = 0;
  const int port = g_server->exporter->port();
  const std::string reply =
      Exchange(port, std::string_view(reinterpret_cast<const char*>(data), size), kReplyMs);
  if (engram::fuzz::Verbose()) {
    std::fprintf(stderr, "reply (%zu bytes): %s\n", reply.size(),
                 reply.substr(0, reply.find('\r')).c_str());
  }
  if (++runs % kLivenessEvery == 0) {
    const std::string ok = Exchange(port, "GET /metrics HTTP/1.0\r\n\r\n", kLivenessReplyMs);
    if (ok.rfind("HTTP/1.1 200", 0) != 0) {
      engram::fuzz::Fail("the server no longer answers GET /metrics with 200; it sent: \"" +
                         ok.substr(0, 200) + "\"");
    }
  }
  return 0;
}
