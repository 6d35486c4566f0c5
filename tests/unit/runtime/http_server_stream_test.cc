// HttpServer in thread-per-connection mode: streamed bodies (chunked under HTTP/1.1), a
// stream learns at once that its client went away (and is destroyed), blocking handlers run
// side by side, idle connections do not starve a request, request headers and the peer reach
// the handler, the error_response hook, and TLS (with and without client certificates) made
// by openssl and driven by curl, both from Debian.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "../../support/loopback_http.h"
#include "../../support/shell.h"
#include "../../support/temp_dir.h"
#include "../../support/test_certs.h"
#include "runtime/http_server.h"

namespace engram {
namespace {

using namespace std::chrono_literals;
using testing::Capture;
using testing::Dial;
using testing::Exchange;
using testing::Shell;
using testing::StatusOf;

std::string Body(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

// Yields "piece 0\n" .. "piece N-1\n", one per Next, `gap` apart.
class Pieces final : public HttpStream {
 public:
  Pieces(int n, std::chrono::milliseconds gap) : n_(n), gap_(gap) {}
  bool Next(std::string* out) override {
    std::this_thread::sleep_for(gap_);
    *out += "piece " + std::to_string(i_++) + "\n";
    return i_ < n_;
  }

 private:
  int n_, i_ = 0;
  std::chrono::milliseconds gap_;
};

HttpServerOptions Threaded() {
  HttpServerOptions o;
  o.thread_per_connection = true;
  return o;
}

TEST(HttpServerStream, StreamsPiecesChunkedAndWhole) {
  auto s = HttpServer::Start(
      "127.0.0.1:0",
      [](const HttpRequest&) {
        HttpResponse r;
        r.content_type = "text/event-stream";
        r.stream = std::make_unique<Pieces>(3, 5ms);
        return r;
      },
      Threaded());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const std::string one_one =
      Exchange((*s)->port(), "GET /s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(StatusOf(one_one), 200) << one_one;
  EXPECT_NE(one_one.find("Transfer-Encoding: chunked"), std::string::npos) << one_one;
  EXPECT_NE(one_one.find("piece 0\n"), std::string::npos) << one_one;
  EXPECT_NE(one_one.find("piece 2\n"), std::string::npos) << one_one;
  EXPECT_NE(one_one.find("\r\n0\r\n\r\n"), std::string::npos) << one_one;  // the last chunk
  const std::string one_zero = Exchange((*s)->port(), "GET /s HTTP/1.0\r\n\r\n");
  EXPECT_EQ(Body(one_zero), "piece 0\npiece 1\npiece 2\n") << one_zero;
}

// Waits for an event that never comes, polling client_gone as HttpApi's streams do.
class Forever final : public HttpStream {
 public:
  Forever(std::function<bool()> gone, std::atomic<int>* destroyed, std::atomic<bool>* saw_gone)
      : gone_(std::move(gone)), destroyed_(destroyed), saw_gone_(saw_gone) {}
  ~Forever() override { destroyed_->fetch_add(1); }
  bool Next(std::string* out) override {
    if (first_) {
      first_ = false;
      *out = "hello\n";
      return true;
    }
    while (!gone_()) std::this_thread::sleep_for(5ms);
    saw_gone_->store(true);
    return false;
  }

 private:
  std::function<bool()> gone_;
  std::atomic<int>* destroyed_;
  std::atomic<bool>* saw_gone_;
  bool first_ = true;
};

TEST(HttpServerStream, AStreamSeesItsClientGoAndIsDestroyed) {
  std::atomic<int> destroyed{0};
  std::atomic<bool> saw_gone{false};
  auto s = HttpServer::Start(
      "127.0.0.1:0",
      [&](const HttpRequest& req) {
        HttpResponse r;
        r.stream = std::make_unique<Forever>(req.client_gone, &destroyed, &saw_gone);
        return r;
      },
      Threaded());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const int fd = Dial((*s)->port());
  ASSERT_GE(fd, 0);
  const std::string req = "GET /s HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  char buf[512];
  std::string got;
  while (got.find("hello") == std::string::npos) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0) << got;
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(destroyed.load(), 0);
  const auto t0 = std::chrono::steady_clock::now();
  ::close(fd);
  while (destroyed.load() == 0 && std::chrono::steady_clock::now() - t0 < 5s) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(saw_gone.load());
  EXPECT_EQ(destroyed.load(), 1) << "the stream outlived its client by 5 s";
}

TEST(HttpServerStream, BlockingHandlersRunSideBySideAndIdleClientsStarveNoOne) {
  std::atomic<int> inside{0};
  auto s = HttpServer::Start(
      "127.0.0.1:0",
      [&](const HttpRequest& req) {
        HttpResponse r;
        if (req.path == "/pair") {  // returns only once two handlers are inside at once
          inside.fetch_add(1);
          const auto t0 = std::chrono::steady_clock::now();
          while (inside.load() < 2 && std::chrono::steady_clock::now() - t0 < 5s) {
            std::this_thread::sleep_for(1ms);
          }
          r.body = inside.load() >= 2 ? "together" : "alone";
        } else {
          r.body = "ok";
        }
        return r;
      },
      Threaded());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const int port = (*s)->port();
  std::string a, b;
  std::thread ta([&] { a = Exchange(port, "GET /pair HTTP/1.0\r\n\r\n"); });
  std::thread tb([&] { b = Exchange(port, "GET /pair HTTP/1.0\r\n\r\n"); });
  ta.join();
  tb.join();
  EXPECT_EQ(Body(a), "together");
  EXPECT_EQ(Body(b), "together");

  std::vector<int> idle;  // connected, silent
  for (int i = 0; i < 32; ++i) idle.push_back(Dial(port));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(Body(Exchange(port, "GET /x HTTP/1.0\r\n\r\n")), "ok");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  for (int fd : idle) ::close(fd);
}

TEST(HttpServerStream, HandlerSeesHeadersAndPeerAndErrorsUseTheHook) {
  HttpServerOptions o = Threaded();
  o.max_body_bytes = 8;
  o.error_response = [](int status, const std::string& reason) {
    HttpResponse r;
    r.status = status;
    r.content_type = "application/json";
    r.body = "{\"why\":\"" + reason + "\"}";
    return r;
  };
  auto s = HttpServer::Start(
      "127.0.0.1:0",
      [](const HttpRequest& req) {
        HttpResponse r;
        const std::string* auth = req.Header("authorization");
        r.body = (auth ? *auth : std::string("-")) + "|" + req.peer.substr(0, 10);
        return r;
      },
      o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const std::string got =
      Exchange((*s)->port(), "GET / HTTP/1.0\r\nAuthorization: Bearer abc\r\nX-Other: 1\r\n\r\n");
  EXPECT_EQ(Body(got), "Bearer abc|127.0.0.1:") << got;
  const std::string big =
      Exchange((*s)->port(), "POST / HTTP/1.0\r\nContent-Length: 9\r\n\r\n123456789");
  EXPECT_EQ(StatusOf(big), 413) << big;
  EXPECT_EQ(Body(big), "{\"why\":\"request body too large\"}") << big;
}

// --- TLS -------------------------------------------------------------------------------

using Certs = testing::TestCerts;

HttpTls TlsOf(const Certs& certs, bool client_ca) {
  HttpTls t;
  t.cert_pem = certs.read("server.pem");
  t.key_pem = certs.read("server.key");
  if (client_ca) t.client_ca_pem = certs.read("ca.pem");
  return t;
}

HttpServer::Handler Echo() {
  return [](const HttpRequest& req) {
    HttpResponse r;
    r.body = req.client_verified ? "verified" : "anonymous";
    return r;
  };
}

TEST(HttpServerTls, ServesHttpsToAClientThatTrustsTheCaAndNothingInPlain) {
  ASSERT_EQ(Shell("command -v openssl && command -v curl"), 0)
      << "scripts/setup.sh installs openssl and curl";
  Certs certs;
  ASSERT_TRUE(certs.ok) << "openssl could not make the test certificates";
  HttpServerOptions o = Threaded();
  o.tls = TlsOf(certs, false);
  auto s = HttpServer::Start("127.0.0.1:0", Echo(), o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const std::string url = "https://127.0.0.1:" + std::to_string((*s)->port()) + "/";
  EXPECT_EQ(Capture("curl -sS --max-time 10 --cacert " + certs.path("ca.pem") + " " + url),
            "anonymous");
  // Not trusted: curl refuses (exit 60); plain HTTP gets no HTTP answer.
  EXPECT_NE(Shell("curl -sS --max-time 10 " + url), 0);
  EXPECT_EQ(StatusOf(Exchange((*s)->port(), "GET / HTTP/1.0\r\n\r\n", 3)), 0);
}

TEST(HttpServerTls, MutualTlsVerifiesTheClientCertificate) {
  ASSERT_EQ(Shell("command -v openssl && command -v curl"), 0)
      << "scripts/setup.sh installs openssl and curl";
  Certs certs;
  ASSERT_TRUE(certs.ok) << "openssl could not make the test certificates";
  HttpServerOptions o = Threaded();
  o.tls = TlsOf(certs, true);
  auto s = HttpServer::Start("127.0.0.1:0", Echo(), o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const std::string url = "https://127.0.0.1:" + std::to_string((*s)->port()) + "/";
  const std::string ca = " --cacert " + certs.path("ca.pem");
  EXPECT_EQ(Capture("curl -sS --max-time 10" + ca + " --cert " + certs.path("client.pem") +
                    " --key " + certs.path("client.key") + " " + url),
            "verified");
  // Without a certificate: the handshake is refused, or the handler sees an unverified client.
  const std::string anon = Capture("curl -s --max-time 10" + ca + " " + url);
  EXPECT_NE(anon, "verified");
}

TEST(HttpServerTls, GarbageKeyMaterialIsUnavailableNotACrash) {
  HttpServerOptions o = Threaded();
  o.tls = HttpTls{"not a certificate", "not a key", ""};
  auto s = HttpServer::Start("127.0.0.1:0", Echo(), o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable) << s.status().ToString();
}

}  // namespace
}  // namespace engram
