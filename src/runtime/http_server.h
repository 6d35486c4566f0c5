// HttpServer: a small HTTP/1.1 server on libmicrohttpd for engramd's HTTP endpoints (the
// Prometheus endpoint today). One internal thread, event-driven (epoll on Linux), so a slow or
// idle client never holds up another; bounded connections, per-connection memory and idle
// timeout; no SIGPIPE (libmicrohttpd sends with MSG_NOSIGNAL). libmicrohttpd's error log goes
// to spdlog.
//
// The handler sees the whole request (its body read up to max_body_bytes, else 413) and
// returns the whole response; for HEAD, libmicrohttpd sends the headers of the handler's
// response (Content-Length included) and no body. A handler that throws answers 500.
//
// Thread safety: the handler runs on the server's thread, one request at a time; Start and the
// destructor are called from one thread. The destructor stops the server (open connections
// are closed) before it returns, so the handler's captures need only outlive the server.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

struct MHD_Daemon;

namespace engram {

struct HttpRequest {
  std::string method;  // "GET", "HEAD", ...
  std::string path;    // the URL path, percent-decoded, without the query string
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers, e.g. Allow
};

struct HttpServerOptions {
  // Names the listen address in errors and logs, e.g. "metrics.listen".
  std::string what = "http listen";
  unsigned idle_timeout_s = 10;      // an idle connection is closed after this
  unsigned max_connections = 256;    // more are refused at accept
  unsigned max_per_ip = 0;           // connections from one address; 0 = no limit
  size_t connection_memory = 32768;  // bytes per connection; a larger request head is refused
  size_t max_body_bytes = 1 << 20;   // a larger request body answers 413
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // Binds `listen` (ResolveListenAddress: "host:port", "[v6]:port", a name, port 0 =
  // ephemeral) and starts serving. INVALID_ARGUMENT naming options.what for a malformed or
  // unresolvable address; UNAVAILABLE (with libmicrohttpd's reason) if it cannot bind.
  static Result<std::unique_ptr<HttpServer>> Start(const std::string& listen, Handler handler,
                                                   HttpServerOptions options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the ephemeral one when listen asked for port 0).
  int port() const { return port_; }

 private:
  struct Callbacks;
  struct Log;
  HttpServer();

  Handler handler_;
  HttpServerOptions options_;
  std::unique_ptr<Log> log_;  // the logger's closure; outlives daemon_
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
};

}  // namespace engram
