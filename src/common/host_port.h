// "host:port" listen addresses (server.listen, metrics.listen): parsed and resolved the way
// every engramd listener and `engramd --check-config` need them, with messages that name the
// config key. Hosts: an IPv4 or IPv6 literal ("[::1]:8080"), a name resolved with
// getaddrinfo ("localhost:0"), or empty ("":port, ":port" = every interface).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <string>
#include <string_view>

#include "common/status.h"

namespace engram {

struct HostPort {
  std::string host;  // as written, without brackets; empty = every interface
  int port = 0;      // 0..65535; 0 = ephemeral
};

// Splits "host:port" and checks the port; `key` ("server.listen") names the value in errors.
Result<HostPort> ParseHostPort(std::string_view text, std::string_view key);

struct ResolvedAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_INET;
  std::string numeric;  // "127.0.0.1:50051", "[::1]:0"
};

// Whether a listener on `text` ("host:port") is reachable from this machine only: a host of
// 127.0.0.0/8, ::1 or the name "localhost". Any other name, an empty host, 0.0.0.0 and [::]
// count as reachable from elsewhere (names are not resolved: what they resolve to can change).
bool IsLoopbackListen(std::string_view text);

// ParseHostPort + getaddrinfo (passive): the first address the host resolves to.
// An unknown host or a malformed literal (256.0.0.1) is INVALID_ARGUMENT naming `key`.
Result<ResolvedAddress> ResolveListenAddress(std::string_view text, std::string_view key);

}  // namespace engram
