#include "runtime/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>

#include "common/host_port.h"

namespace engram {
namespace {

// One request in flight: its body so far (libmicrohttpd hands it over in pieces).
struct Pending {
  std::string body;
  bool too_large = false;
};

}  // namespace

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

  static MHD_Result Queue(MHD_Connection* connection, const HttpResponse& r) {
    // libmicrohttpd copies the body: a scrape is small next to the time to build it.
    MHD_Response* response = MHD_create_response_from_buffer(
        r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
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

  static HttpResponse Error(int status, const char* body) {
    HttpResponse r;
    r.status = status;
    r.body = body;
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

  static void Completed(void* /*cls*/, MHD_Connection* /*connection*/, void** con_cls,
                        MHD_RequestTerminationCode /*toe*/) {
    delete static_cast<Pending*>(*con_cls);
    *con_cls = nullptr;
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
    const char* length =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length != nullptr && std::strtoull(length, nullptr, 10) > self.options_.max_body_bytes) {
      return Queue(connection, Error(MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n"));
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
    return Queue(connection, Error(MHD_HTTP_CONTENT_TOO_LARGE, "request body too large\n"));
  }
  HttpResponse response;
  try {
    response = self.handler_(HttpRequest{method, url, std::move(pending->body)});
  } catch (const std::exception& e) {
    spdlog::error("{}: {} {}: {}", self.options_.what, method, url, e.what());
    response = Error(MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
  } catch (...) {
    spdlog::error("{}: {} {}: unknown exception", self.options_.what, method, url);
    response = Error(MHD_HTTP_INTERNAL_SERVER_ERROR, "internal error\n");
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
  // clang-format off
  s->daemon_ = MHD_start_daemon(
      flags, port, nullptr, nullptr, &Callbacks::Access, s.get(),
      // The logger first, so that it sees the other options' complaints too.
      MHD_OPTION_EXTERNAL_LOGGER, &Callbacks::Logger, log,
      MHD_OPTION_NOTIFY_COMPLETED, &Callbacks::Completed, nullptr,
      MHD_OPTION_SOCK_ADDR, reinterpret_cast<const sockaddr*>(&addr->addr),
      MHD_OPTION_CONNECTION_TIMEOUT, s->options_.idle_timeout_s,
      MHD_OPTION_CONNECTION_LIMIT, s->options_.max_connections,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->options_.max_per_ip,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, s->options_.connection_memory,
      // 0 = the default pthread stack: a small one cannot hold the static TLS of cuBLAS.
      MHD_OPTION_THREAD_STACK_SIZE, size_t{0},
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

HttpServer::~HttpServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace engram
