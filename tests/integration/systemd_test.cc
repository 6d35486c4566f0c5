// engramd under systemd: the shipped unit (deploy/systemd) passes systemd-analyze verify, and
// the daemon speaks the sd_notify protocol to a NOTIFY_SOCKET the test owns (READY=1 only once
// health is SERVING, STATUS= while loading, WATCHDOG=1 heartbeats, STOPPING=1 on SIGTERM).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../support/loopback_http.h"
#include "../support/shell.h"
#include "../support/temp_dir.h"
#include "daemon_process.h"
#include "rpc_helpers.h"
#include "runtime/daemon/service_notify.h"

namespace engram::testing {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// A unix datagram socket in the abstract namespace (no file to clean up): what systemd hands a
// Type=notify service as NOTIFY_SOCKET.
class NotifySocket {
 public:
  NotifySocket() {
    name_ = fmt::format("engramd-notify-test-{}-{}", ::getpid(), counter_++);
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, name_.data(), name_.size());  // sun_path[0] = 0: abstract
    const socklen_t len =
        static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name_.size());
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  // The NOTIFY_SOCKET value: "@" names the abstract namespace (sd_notify(3)).
  std::string env() const { return "NOTIFY_SOCKET=@" + name_; }

  // The next datagram within timeout_s, if one came.
  std::optional<std::string> Receive(double timeout_s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout_s * 1000)) != 1) return std::nullopt;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<size_t>(n));
  }

 private:
  static inline int counter_ = 0;
  std::string name_;
  int fd_ = -1;
};

bool Has(const std::string& message, const std::string& assignment) {
  std::istringstream in(message);
  for (std::string line; std::getline(in, line);) {
    if (line == assignment || (assignment.back() == '=' && line.rfind(assignment, 0) == 0)) {
      return true;
    }
  }
  return false;
}

int PortOf(const std::string& address) {
  return std::atoi(address.substr(address.rfind(':') + 1).c_str());
}

// systemd-analyze verify exits 0 on an unknown key or a value it cannot parse (it only warns),
// so the test fails on any warning that names the unit or its drop-in, too. ExecStart points at
// the built engramd, through a two-line script in the temporary directory that execs it: verify
// checks that the command exists and is executable, which the installed path
// /usr/local/bin/engramd is not on a build machine, and the build's own binary briefly is not
// while a shared build dir relinks it. The other lines are the shipped ones, and the drop-in
// directory beside the copy is verified with it.
TEST(SystemdUnit, VerifiesWithSystemdAnalyze) {
  if (Shell("command -v systemd-analyze") != 0) {
    GTEST_SKIP() << "systemd-analyze is not installed (apt install systemd; scripts/setup.sh)";
  }
  const fs::path src = fs::path(ENGRAM_REPO) / "deploy/systemd";
  testutil::TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  fs::copy(src, dir.path(), fs::copy_options::recursive);
  const std::string unit = dir / "engramd.service";
  std::string text = testutil::ReadFile(unit);
  const std::string shipped = "ExecStart=/usr/local/bin/engramd --config /etc/engramd/model.yaml";
  ASSERT_NE(text.find(shipped), std::string::npos) << "the unit no longer starts " << shipped;
  const std::string engramd = dir / "engramd";
  testutil::WriteFile(engramd, std::string("#!/bin/sh\nexec '") + ENGRAMD + "' \"$@\"\n");
  fs::permissions(engramd, fs::perms::owner_all);
  text.replace(text.find(shipped), std::strlen("ExecStart=/usr/local/bin/engramd"),
               "ExecStart=" + engramd);
  testutil::WriteFile(unit, text);
  ASSERT_TRUE(fs::exists(dir / "engramd.service.d/hugepages.conf"));

  int rc = -1;
  const std::string out = Capture("systemd-analyze verify --man=no '" + unit + "' 2>&1", &rc);
  EXPECT_EQ(rc, 0) << out;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    EXPECT_EQ(line.find("engramd.service"), std::string::npos) << line;
    EXPECT_EQ(line.find(dir.path()), std::string::npos) << line;
  }
  // The verify above is meaningful: the same copy with a typo'd key is reported.
  testutil::WriteFile(unit, text + "\n[Service]\nWatchdogSecs=1\n");
  const std::string bad = Capture("systemd-analyze verify --man=no '" + unit + "' 2>&1");
  EXPECT_NE(bad.find("WatchdogSecs"), std::string::npos) << bad;
}

TEST(SystemdNotify, ReadyAfterServingThenWatchdogThenStopping) {
  if (!ServiceNotifier::Supported()) {
    GTEST_SKIP() << "engramd was built without libsystemd (apt install libsystemd-dev)";
  }
  NotifySocket sock;
  ASSERT_TRUE(sock.ok()) << "cannot bind a unix datagram socket";
  DaemonOptions o;
  o.tables = "  tier: dram\n  pin: on\n";  // a tiny table: mlock fits any memlock limit
  o.wait_ready = false;
  // WATCHDOG_PID unset: sd_watchdog_enabled then takes WATCHDOG_USEC as meant for engramd.
  o.env = {sock.env(), "WATCHDOG_USEC=200000", "WATCHDOG_PID"};
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  auto channel = Connect((*d)->address());

  // Until READY=1: STATUS= lines, no heartbeat (the watchdog starts once serving).
  std::vector<std::string> before;
  std::optional<std::string> ready;
  const auto load_end = Clock::now() + std::chrono::seconds(120);
  while (!ready && Clock::now() < load_end) {
    std::optional<std::string> m = sock.Receive(1);
    if (!m) continue;
    if (Has(*m, "READY=1")) {
      ready = m;
    } else {
      before.push_back(*m);
    }
  }
  ASSERT_TRUE(ready) << "no READY=1 within 120 s; stderr:\n" << (*d)->StderrLog();
  // READY=1 means serving: health says so when asked at once.
  grpc::Status call;
  EXPECT_EQ(HealthCheck(channel, &call), Health::kServing) << call.error_message();
  EXPECT_EQ(StatusOf(Exchange(PortOf((*d)->http_address()),
                              "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")),
            200);
  EXPECT_TRUE(Has(*ready, "STATUS=")) << *ready;
  int statuses = 0;
  bool fill_status = false, pin_status = false;
  for (const std::string& m : before) {
    EXPECT_FALSE(Has(m, "WATCHDOG=1")) << "heartbeat before READY=1";
    if (Has(m, "STATUS=")) ++statuses;
    if (m.find("Engram tables: filling the dram tier") != std::string::npos) fill_status = true;
    if (m.find("Engram tables: pinning table 1 of") != std::string::npos) pin_status = true;
  }
  EXPECT_GE(statuses, 1) << "no STATUS= during the load";
  EXPECT_TRUE(fill_status) << "no STATUS= for the dram tier's fill";
  EXPECT_TRUE(pin_status) << "no STATUS= for pinning the tables";

  // Heartbeats every WATCHDOG_USEC/2 = 100 ms: about 20 over 2 s; the bounds are generous (a
  // busy machine delays pings, it does not make them ten times fewer).
  int pings = 0;
  const auto window_end = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < window_end) {
    const double left = std::chrono::duration<double>(window_end - Clock::now()).count();
    std::optional<std::string> m = sock.Receive(std::max(left, 0.0));
    if (m && Has(*m, "WATCHDOG=1")) ++pings;
  }
  EXPECT_GE(pings, 5) << (*d)->StderrLog();
  EXPECT_LE(pings, 60);

  // SIGTERM: STOPPING=1 as the drain starts, then a clean exit.
  ASSERT_TRUE((*d)->Signal(SIGTERM).ok());
  std::optional<std::string> stopping;
  const auto stop_end = Clock::now() + std::chrono::seconds(30);
  while (!stopping && Clock::now() < stop_end) {
    std::optional<std::string> m = sock.Receive(1);
    if (m && Has(*m, "STOPPING=1")) stopping = m;
  }
  ASSERT_TRUE(stopping) << "no STOPPING=1 after SIGTERM; stderr:\n" << (*d)->StderrLog();
  EXPECT_NE(stopping->find("STATUS=draining"), std::string::npos) << *stopping;
  const std::optional<int> ws = (*d)->WaitExit(30);
  EXPECT_TRUE(ws && WIFEXITED(*ws) && WEXITSTATUS(*ws) == 0) << ExitDescription(ws);
}

// Without NOTIFY_SOCKET (not started by systemd) nothing changes: the daemon starts and serves.
TEST(SystemdNotify, WithoutNotifySocketTheDaemonServesAsBefore) {
  DaemonOptions o;
  o.env = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"};
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  grpc::Status call;
  EXPECT_EQ(HealthCheck(Connect((*d)->address()), &call), Health::kServing);
  EXPECT_EQ((*d)->Stop(), 0);
}

}  // namespace
}  // namespace engram::testing
