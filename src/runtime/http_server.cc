#include "runtime/http_server.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/host_port.h"

namespace engram {
namespace {

// One request in flight: its body so far (libmicrohttpd hands it over in pieces).
struct Pending {
  std::string body;
  bool too_large = false;
};

// A streamed response body: what the stream produced and how much of it was sent.
struct StreamState {
  std::unique_ptr<HttpStream> stream;
  std::string buf;
  size_t off = 0;
  bool done = false;
};

// Whether the peer has closed its side (or the socket failed): a zero-timeout poll, which
// leaves any bytes the peer sent (a pipelined request) where they are.
bool PeerClosed(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

MHD_Result CollectHeader(void* cls, MHD_ValueKind, const char* key, const char* value) {
  auto* out = static_cast<std::vector<std::pair<std::string, std::string>>*>(cls);
  std::string name = key != nullptr ? key : "";
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  out->emplace_back(std::move(name), value != nullptr ? value : "");
  return MHD_YES;
}

std::string PeerAddress(MHD_Connection* connection) {
  const MHD_ConnectionInfo* ci =
      MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci == nullptr || ci->client_addr == nullptr) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  const sockaddr* sa = ci->client_addr;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "?";
}

// TLS with a client CA: the client sent a certificate and it verifies against the CA.
bool ClientVerified(MHD_Connection* connection) {
  const MHD_ConnectionInfo* ci =
      MHD_get_connection_info(connection, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  if (ci == nullptr || ci->tls_session == nullptr) return false;
  auto session = static_cast<gnutls_session_t>(ci->tls_session);
  unsigned int n = 0;
  if (gnutls_certificate_get_peers(session, &n) == nullptr || n == 0) return false;
  unsigned int status = 0;
  return gnutls_certificate_verify_peers2(session, &status) == GNUTLS_E_SUCCESS && status == 0;
}

}  // namespace

const std::string* HttpRequest::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return &v;
  }
  return nullptr;
}

// libmicrohttpd's log goes to spdlog; while starting, the last line is kept so a failed start
// can say why (MHD_start_daemon only returns NULL).
struct HttpServer::Log {
  std::string what;
  std::mutex mu;
  std::string last;      // GUARDED_BY(mu)
  bool starting = true;  // GUARDED_BY(mu)
};

struct HttpServer::Callbacks {
  static void Logger(void* cls, const char* fm, va_list ap) {
    auto* log = static_cast<HttpServer::Log*>(cls);
    char buf[512];
    std::vsnprintf(buf, sizeof buf, fm, ap);
    size_t n = std::strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    try {  // no exception may cross back into C
      {
        std::lock_guard<std::mutex> lock(log->mu);
        if (log->starting) log->last = buf;
      }
      spdlog::warn("{}: {}", log->what, buf);
    } catch (...) {
    }
  }

  static ssize_t ReadStream(void* cls, uint64_t /*pos*/, char* buf, size_t max) {
    auto* st = static_cast<StreamState*>(cls);
    try {  // no exception may cross back into C
      while (st->off == st->buf.size()) {
        if (st->done) return MHD_CONTENT_READER_END_OF_STREAM;
        st->buf.clear();
        st->off = 0;
        if (!st->stream->Next(&st->buf)) st->done = true;
      }
      const size_t n = std::min(max, st->buf.size() - st->off);
      std::memcpy(buf, st->buf.data() + st->off, n);
      st->off += n;
      return static_cast<ssize_t>(n);
    } catch (const std::exception& e) {
      spdlog::error("http stream: {}", e.what());
    } catch (...) {
    }
    return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  static void FreeStream(void* cls) { delete static_cast<StreamState*>(cls); }

  static MHD_Result Queue(MHD_Connection* connection, HttpResponse& r) {
    MHD_Response* response = nullptr;
    if (r.stream) {
      auto st = std::make_unique<StreamState>();
      st->stream = std::move(r.stream);
      response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, &ReadStream,
                                                   st.get(), &FreeStream);
      if (response != nullptr) st.release();  // FreeStream owns it now
    } else {
      // libmicrohttpd copies the body: small next to the time to build it.
      response = MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()),
                                                 MHD_RESPMEM_MUST_COPY);
    }
    if (response == nullptr) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str());
    for (const auto& [name, value] : r.headers) {
      MHD_add_response_header(response, name.c_str(), value.c_str());
    }
    const MHD_Result ret =
        MHD_queue_response(connection, static_cast<unsigned>(r.status), response);
    MHD_destroy_response(response);
    return ret;
  }

  static HttpResponse Error(const HttpServer& self, int status, const char* reason) {
    if (self.options_.error_response) {
      try {
        return self.options_.error_response(status, reason);
      } catch (...) {
      }
    }
    HttpResponse r;
    r.status = status;
    r.body = std::string(reason) + "\n";
    return r;
  }

  static MHD_Result Access(void* cls, MHD_Connection* connection, const char* url,
                           const char* method, const char* /*version*/, const char* upload_data,
                           size_t* upload_data_size, void** con_cls) {
    auto* self = static_cast<HttpServer*>(cls);
    try {  // no exception may cross back into C; MHD_NO closes the connection
      return Serve(*self, connection, url, method, upload_data, upload_data_size, con_cls);
    } catch (...) {
      return MHD_NO;
    }
  }

  static MHD_Result Serve(HttpServer& self, MHD_Connection* connection, const char* url,
                          const char* method, const char* upload_data, size_t* upload_data_size,
                          void** con_cls);

  // After the response is sent (or the request ended otherwise): the request is no longer in
  // progress.
  static void Completed(void* cls, MHD_Connection* /*connection*/, void** con_cls,
                        MHD_RequestTerminationCode /*toe*/) {
    if (*con_cls == nullptr) return;
    delete static_cast<Pending*>(*con_cls);
    *con_cls = nullptr;
    static_cast<HttpServer*>(cls)->in_progress_.fetch_sub(1, std::memory_order_acq_rel);
  }
};

// Called once with the head (*con_cls is null), then once per piece of the body, then once
// with *upload_data_size 0: the request is complete and the handler answers.
MHD_Result HttpServer::Callbacks::Serve(HttpServer& self, MHD_Connection* connection,
                                        const char* url, const char* method,
                                        const char* upload_data, size_t* upload_data_size,
                                        void** con_cls) {
  if (*con_cls == nullptr) {
    *con_cls = new Pending();
    self.in_progress_.fetch_add(1, std::memory_order_acq_rel);
    const char* length =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length != nullptr && std::strtoull(length, nullptr, 10) > self.options_.max_body_bytes) {
      HttpResponse r = Error(self, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
      return Queue(connection, r);
    }
    return MHD_YES;
  }
  auto* pending = static_cast<Pending*>(*con_cls);
  if (*upload_data_size != 0) {  // a chunked body can only be measured as it comes
    if (pending->body.size() + *upload_data_size > self.options_.max_body_bytes) {
      pending->too_large = true;
      pending->body = std::string();
    }
    if (!pending->too_large) pending->body.append(upload_data, *upload_data_size);
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (pending->too_large) {
    HttpResponse r = Error(self, MHD_HTTP_CONTENT_TOO_LARGE, "request body too large");
    return Queue(connection, r);
  }
  HttpRequest request;
  request.method = method;
  request.path = url;
  request.body = std::move(pending->body);
  MHD_get_connection_values(connection, MHD_HEADER_KIND, &CollectHeader, &request.headers);
  request.peer = PeerAddress(connection);
  if (self.options_.tls && !self.options_.tls->client_ca_pem.empty()) {
    request.client_verified = ClientVerified(connection);
  }
  if (const MHD_ConnectionInfo* ci =
          MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
      ci != nullptr) {
    const int fd = ci->connect_fd;
    request.client_gone = [fd] { return PeerClosed(fd); };
  }
  HttpResponse response;
  try {
    response = self.handler_(request);
    if (response.stream && !self.options_.thread_per_connection) {
      throw std::logic_error("a streamed response needs a thread_per_connection server");
    }
  } catch (const std::exception& e) {
    spdlog::error("{}: {} {}: {}", self.options_.what, method, url, e.what());
    response = Error(self, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error");
  } catch (...) {
    spdlog::error("{}: {} {}: unknown exception", self.options_.what, method, url);
    response = Error(self, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error");
  }
  return Queue(connection, response);
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& listen, Handler handler,
                                                      HttpServerOptions options) {
  auto addr = ResolveListenAddress(listen, options.what);
  if (!addr.ok()) return addr.status();
  const bool ipv6 = addr->family == AF_INET6;
  const uint16_t port = ntohs(ipv6 ? reinterpret_cast<const sockaddr_in6*>(&addr->addr)->sin6_port
                                   : reinterpret_cast<const sockaddr_in*>(&addr->addr)->sin_port);
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->handler_ = std::move(handler);
  s->options_ = std::move(options);
  s->log_->what = s->options_.what;
  Log* log = s->log_.get();

  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
  if (ipv6) flags |= MHD_USE_IPv6;
  if (s->options_.thread_per_connection) flags |= MHD_USE_THREAD_PER_CONNECTION;
  // TLS options go first in the list below (an empty key is MHD_OPTION_END's neighbour
  // otherwise); libmicrohttpd reads the PEM text at start and keeps the pointers, which
  // live in options_.
  MHD_OptionItem tls_options[4] = {{MHD_OPTION_END, 0, nullptr},
                                   {MHD_OPTION_END, 0, nullptr},
                                   {MHD_OPTION_END, 0, nullptr},
                                   {MHD_OPTION_END, 0, nullptr}};
  if (s->options_.tls) {
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      return FailedPrecondition("{}: TLS asked for, but this libmicrohttpd was built without it",
                                s->options_.what);
    }
    const HttpTls& t = *s->options_.tls;
    flags |= MHD_USE_TLS;
    int i = 0;
    tls_options[i++] = {MHD_OPTION_HTTPS_MEM_CERT, 0, const_cast<char*>(t.cert_pem.c_str())};
    tls_options[i++] = {MHD_OPTION_HTTPS_MEM_KEY, 0, const_cast<char*>(t.key_pem.c_str())};
    if (!t.client_ca_pem.empty()) {
      tls_options[i++] = {MHD_OPTION_HTTPS_MEM_TRUST, 0,
                          const_cast<char*>(t.client_ca_pem.c_str())};
    }
  }
  // clang-format off
  s->daemon_ = MHD_start_daemon(
      flags, port, nullptr, nullptr, &Callbacks::Access, s.get(),
      // The logger first, so that it sees the other options' complaints too.
      MHD_OPTION_EXTERNAL_LOGGER, &Callbacks::Logger, log,
      MHD_OPTION_NOTIFY_COMPLETED, &Callbacks::Completed, s.get(),
      MHD_OPTION_SOCK_ADDR, reinterpret_cast<const sockaddr*>(&addr->addr),
      MHD_OPTION_CONNECTION_TIMEOUT, s->options_.idle_timeout_s,
      MHD_OPTION_CONNECTION_LIMIT, s->options_.max_connections,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->options_.max_per_ip,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->options_.connection_memory,
      // 0 = the default pthread stack: a small one cannot hold the static TLS of cuBLAS.
      MHD_OPTION_THREAD_STACK_SIZE, size_t{0},
      MHD_OPTION_ARRAY, tls_options,
      MHD_OPTION_END);
  // clang-format on
  std::string why;
  {
    std::lock_guard<std::mutex> lock(log->mu);
    log->starting = false;
    why = std::move(log->last);
  }
  if (s->daemon_ == nullptr) {
    return Unavailable("{} \"{}\": cannot listen: {}", s->options_.what, listen,
                       why.empty() ? "libmicrohttpd did not start" : why);
  }
  const MHD_DaemonInfo* info = MHD_get_daemon_info(s->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  s->port_ = info != nullptr ? info->port : 0;
  return s;
}

HttpServer::HttpServer() : log_(std::make_unique<Log>()) {}

bool HttpServer::WaitIdle(std::chrono::steady_clock::time_point deadline) const {
  while (in_progress_.load(std::memory_order_acquire) > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

HttpServer::~HttpServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace engram
