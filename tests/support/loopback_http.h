// Plain-socket HTTP over loopback for the tests of engramd's HTTP endpoints: connect to
// 127.0.0.1:PORT, send raw bytes, read the whole reply. Header-only; loopback only.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace engram::testing {

// A socket connected to 127.0.0.1:port within timeout_s (non-blocking connect), left blocking
// with timeout_s receive and send timeouts; -1 if it did not connect.
inline int Dial(int port, double timeout_s = 10) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (errno != EINPROGRESS || ::poll(&p, 1, static_cast<int>(timeout_s * 1000)) != 1 ||
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      ::close(fd);
      return -1;
    }
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval tv{static_cast<time_t>(timeout_s), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends `request` to 127.0.0.1:port and returns everything read until the server closes (or
// timeout_s passes on a read); "" if it cannot connect.
inline std::string Exchange(int port, const std::string& request, double timeout_s = 10) {
  const int fd = Dial(port, timeout_s);
  if (fd < 0) return "";
  size_t off = 0;
  while (off < request.size()) {
    const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (and close) before it has read it all
    off += static_cast<size_t>(n);
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// The status code of an HTTP response ("HTTP/1.1 200 OK..." -> 200); 0 if there is none.
inline int StatusOf(const std::string& response) {
  const size_t sp = response.find(' ');
  if (response.rfind("HTTP/1.", 0) != 0 || sp == std::string::npos) return 0;
  return std::atoi(response.c_str() + sp + 1);
}

}  // namespace engram::testing
