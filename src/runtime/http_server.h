// HttpServer: an HTTP/1.1 server on libmicrohttpd for engramd's HTTP endpoints (the metrics
// port, the OpenAI-compatible front door). No SIGPIPE (libmicrohttpd sends with MSG_NOSIGNAL);
// bounded connections (in all and per address), per-connection memory (the request head) and
// idle time; libmicrohttpd's error log goes to spdlog. Optionally TLS (GnuTLS) from PEM text,
// with client certificates verified against a CA (mutual TLS).
//
// Two threading modes:
// - one event-driven thread (epoll on Linux), the default: for handlers that answer at once
//   (a scrape); a slow or idle client never holds up another.
// - a thread per connection (thread_per_connection): handlers may block (a generation) and
//   responses may stream. Idle connections still time out; at most max_connections threads.
//
// The handler sees the whole request (its body read up to max_body_bytes, else 413) and
// returns the response: a whole body, or a stream (HttpStream) that produces it piece by piece
// (sent chunked under HTTP/1.1). For HEAD, libmicrohttpd sends the headers of the handler's
// response and no body. A handler that throws answers 500.
//
// Thread safety: the handler runs on the server's thread(s), concurrently in the
// thread-per-connection mode; Start and the destructor are called from one thread. The
// destructor stops the server (open connections are closed, their streams destroyed) before it
// returns, so the handler's captures need only outlive the server.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

struct MHD_Daemon;

namespace engram {

struct HttpRequest {
  std::string method;  // "GET", "HEAD", ...
  std::string path;    // the URL path, percent-decoded, without the query string
  std::string body;
  // Request headers, names lower-cased, in arrival order.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string peer;  // the client's address, "host:port", for logs
  // TLS with a client CA: whether the client presented a certificate that verified.
  bool client_verified = false;
  // True once the client has closed its side of the connection (a cheap non-blocking probe of
  // the socket); a blocking handler or a stream polls it to cancel work nobody will read.
  // Valid only while the request's handler or stream runs.
  std::function<bool()> client_gone = [] { return false; };

  // The value of header `name` (lower case), or null.
  const std::string* Header(std::string_view name) const;
};

// The body of a streamed response, produced on the connection's thread.
class HttpStream {
 public:
  // Destroyed when the response has been sent, the client went away or the server stops: the
  // place to cancel what the stream was waiting for.
  virtual ~HttpStream() = default;
  // Appends the next piece of the body to *out, blocking until there is one (and polling
  // the request's client_gone while it waits). Returns false when the body is complete (what
  // was appended is still sent); a stream that finds the client gone returns false at once.
  virtual bool Next(std::string* out) = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;                                          // ignored when stream is set
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers, e.g. Allow
  std::unique_ptr<HttpStream> stream;                        // thread_per_connection servers only
};

// TLS for a listener, as PEM text (runtime/tls_files.h loads and checks the files).
struct HttpTls {
  std::string cert_pem;
  std::string key_pem;
  std::string client_ca_pem;  // non-empty: clients must present a certificate it verifies
};

struct HttpServerOptions {
  // Names the listen address in errors and logs, e.g. "metrics.listen".
  std::string what = "http listen";
  unsigned idle_timeout_s = 10;        // an idle connection is closed after this
  unsigned max_connections = 256;      // more are refused at accept
  unsigned max_per_ip = 0;             // connections from one address; 0 = no limit
  size_t connection_memory = 32768;    // bytes per connection; a larger request head is refused
  size_t max_body_bytes = 1 << 20;     // a larger request body answers 413
  bool thread_per_connection = false;  // see the modes above
  // The response to a request the server refuses itself (413 body too large, 500 handler
  // threw), from the status and a short reason; null: that reason as text/plain.
  std::function<HttpResponse(int status, const std::string& reason)> error_response;
  std::optional<HttpTls> tls;  // set: HTTPS only
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // Binds `listen` (ResolveListenAddress: "host:port", "[v6]:port", a name, port 0 =
  // ephemeral) and starts serving. INVALID_ARGUMENT naming options.what for a malformed or
  // unresolvable address; UNAVAILABLE (with libmicrohttpd's reason) if it cannot bind or
  // the TLS material is refused; FAILED_PRECONDITION for TLS where libmicrohttpd lacks it.
  static Result<std::unique_ptr<HttpServer>> Start(const std::string& listen, Handler handler,
                                                   HttpServerOptions options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (the ephemeral one when listen asked for port 0).
  int port() const { return port_; }
  // Requests received and not yet completed (a streamed response counts until its last byte,
  // the end of the chunked body included, is sent or the peer is gone).
  int requests_in_progress() const { return in_progress_.load(std::memory_order_acquire); }
  // Waits until no request is in progress or `deadline` passes; whether it became idle. For a
  // drain: the destructor closes connections, cutting any response still being written.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline) const;

 private:
  struct Callbacks;
  struct Log;
  HttpServer();

  Handler handler_;
  HttpServerOptions options_;
  std::unique_ptr<Log> log_;  // the logger's closure; outlives daemon_
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
  std::atomic<int> in_progress_{0};
};

}  // namespace engram
