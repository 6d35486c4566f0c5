// HttpServer: listen-address parsing (clear INVALID_ARGUMENT, never a throw), a bind failure
// that says why, and a real loopback server: the handler sees method, path and body; HEAD has
// no body; a throwing handler answers 500; a body over the limit answers 413.
#include "runtime/http_server.h"

#include "../../support/loopback_http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

namespace engram {
namespace {

using testing::Exchange;

std::string Body(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

// The address is common/host_port's ResolveListenAddress (tested there); Start passes its
// INVALID_ARGUMENT on, naming options.what, without throwing.
TEST(HttpServer, BadListenStringsAreClearInvalidArguments) {
  const struct {
    const char* listen;
    const char* why;
  } cases[] = {
      {"nohost", "metrics.listen: \"nohost\" is not host:port"},
      {"127.0.0.1:99999", "port \"99999\" is not a number in 0..65535"},
      {"127.0.0.1:abc", "port \"abc\" is not a number in 0..65535"},
      {"127.0.0.1:", "port \"\" is not a number in 0..65535"},
      {"127.0.0.1:99999999999999999999", "is not a number in 0..65535"},
      {"256.0.0.1:0", "\"256.0.0.1\" is not an IPv4 address"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.listen);
    HttpServerOptions o;
    o.what = "metrics.listen";
    Result<std::unique_ptr<HttpServer>> s = Status();
    EXPECT_NO_THROW(s = HttpServer::Start(
                        c.listen, [](const HttpRequest&) { return HttpResponse{}; }, o));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.status().message().rfind("metrics.listen: ", 0), 0u) << s.status().message();
    EXPECT_NE(s.status().message().find(c.why), std::string::npos) << s.status().message();
  }
}

TEST(HttpServer, ServesTheHandlersResponses) {
  HttpServerOptions o;
  o.max_body_bytes = 16;
  auto s = HttpServer::Start(
      "127.0.0.1:0",
      [](const HttpRequest& req) {
        if (req.path == "/throw") throw std::runtime_error("boom");
        HttpResponse r;
        r.status = req.path == "/teapot" ? 418 : 200;
        r.headers.emplace_back("X-Method", req.method);
        r.body = req.method + " " + req.path + " [" + req.body + "]";
        return r;
      },
      o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const int port = (*s)->port();
  ASSERT_GT(port, 0);

  const std::string get = Exchange(port, "GET /a%20b?q=1 HTTP/1.0\r\n\r\n");
  EXPECT_EQ(get.rfind("HTTP/1.1 200", 0), 0u) << get;
  EXPECT_NE(get.find("X-Method: GET"), std::string::npos) << get;
  EXPECT_EQ(Body(get), "GET /a b []");

  const std::string post = Exchange(port,
                                    "POST /teapot HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                    "Connection: close\r\n\r\nhello");
  EXPECT_EQ(post.rfind("HTTP/1.1 418", 0), 0u) << post;
  EXPECT_EQ(Body(post), "POST /teapot [hello]");

  const std::string head =
      Exchange(port, "HEAD /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_NE(head.find("Content-Length: 10"), std::string::npos) << head;  // "HEAD /x []"
  EXPECT_EQ(Body(head), "");

  const std::string thrown = Exchange(port, "GET /throw HTTP/1.0\r\n\r\n");
  EXPECT_EQ(thrown.rfind("HTTP/1.1 500", 0), 0u) << thrown;

  const std::string big = Exchange(port,
                                   "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n"
                                   "Connection: close\r\n\r\n" +
                                       std::string(17, 'b'));
  EXPECT_EQ(big.rfind("HTTP/1.1 413", 0), 0u) << big;
  const std::string chunked =
      Exchange(port,
               "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               "Connection: close\r\n\r\n10\r\n" +
                   std::string(16, 'c') + "\r\n1\r\nc\r\n0\r\n\r\n");
  EXPECT_EQ(chunked.rfind("HTTP/1.1 413", 0), 0u) << chunked;
}

TEST(HttpServer, ListensOnIpv6Loopback) {
  auto s = HttpServer::Start("[::1]:0", [](const HttpRequest&) {
    HttpResponse r;
    r.body = "six";
    return r;
  });
  if (!s.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << s.status().ToString();
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_port = htons(static_cast<uint16_t>((*s)->port()));
  addr.sin6_addr = in6addr_loopback;
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req = "GET / HTTP/1.0\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
      char buf[1024];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  EXPECT_EQ(Body(out), "six") << out;
}

TEST(HttpServer, BusyPortIsUnavailableWithTheReason) {
  auto first = HttpServer::Start("127.0.0.1:0", [](const HttpRequest&) { return HttpResponse{}; });
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  const std::string listen = fmt::format("127.0.0.1:{}", (*first)->port());
  auto second = HttpServer::Start(listen, [](const HttpRequest&) { return HttpResponse{}; });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(listen), std::string::npos) << second.status().message();
  EXPECT_NE(second.status().message().find("cannot listen: "), std::string::npos)
      << second.status().message();
  EXPECT_NE(second.status().message().find("in use"), std::string::npos)
      << second.status().message();
}

}  // namespace
}  // namespace engram
