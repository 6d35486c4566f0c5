#include "common/host_port.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <charconv>
#include <cstring>

namespace engram {

Result<HostPort> ParseHostPort(std::string_view text, std::string_view key) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return InvalidArgument("{}: \"{}\" is not host:port (expected e.g. 127.0.0.1:50051)", key,
                           text);
  }
  HostPort a;
  std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return InvalidArgument("{}: \"{}\": an IPv6 host goes in brackets, e.g. [::1]:50051", key,
                           text);
  }
  a.host = std::string(host);
  int p = -1;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || p < 0 || p > 65535) {
    return InvalidArgument("{}: \"{}\": port \"{}\" is not a number in 0..65535", key, text, port);
  }
  a.port = p;
  return a;
}

Result<ResolvedAddress> ResolveListenAddress(std::string_view text, std::string_view key) {
  ENGRAM_ASSIGN_OR_RETURN(HostPort a, ParseHostPort(text, key));
  // A dotted-digits host is an IPv4 literal or nothing: never a name to look up.
  if (!a.host.empty() && a.host.find_first_not_of("0123456789.") == std::string::npos) {
    in_addr v4{};
    if (::inet_pton(AF_INET, a.host.c_str(), &v4) != 1) {
      return InvalidArgument("{}: \"{}\": \"{}\" is not an IPv4 address", key, text, a.host);
    }
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(a.port);
  const int rc =
      ::getaddrinfo(a.host.empty() ? nullptr : a.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return InvalidArgument("{}: \"{}\": host \"{}\" does not resolve ({})", key, text, a.host,
                           rc == EAI_SYSTEM ? std::strerror(errno) : ::gai_strerror(rc));
  }
  ResolvedAddress r;
  std::memcpy(&r.addr, res->ai_addr, res->ai_addrlen);
  r.len = res->ai_addrlen;
  r.family = res->ai_family;
  ::freeaddrinfo(res);
  char buf[INET6_ADDRSTRLEN] = {};
  if (r.family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&r.addr)->sin6_addr, buf, sizeof buf);
    r.numeric = fmt::format("[{}]:{}", buf, a.port);
  } else {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&r.addr)->sin_addr, buf, sizeof buf);
    r.numeric = fmt::format("{}:{}", buf, a.port);
  }
  return r;
}

bool IsLoopbackListen(std::string_view text) {
  auto hp = ParseHostPort(text, "listen");
  if (!hp.ok()) return false;
  const std::string& h = hp->host;
  if (h == "localhost" || h == "::1") return true;
  in_addr a{};
  if (inet_pton(AF_INET, h.c_str(), &a) == 1) return (ntohl(a.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, h.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6) != 0;
  return false;
}

}  // namespace engram
