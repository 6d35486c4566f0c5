// ServiceNotifier: engramd's side of the service manager's readiness protocol (sd_notify(3)),
// for a systemd unit of Type=notify (deploy/systemd/engramd.service).
//
// Contract: READY=1 is sent once, when the model and tables are loaded and both servers serve
// (the moment gRPC health turns SERVING); STATUS= lines say what is loading before that;
// STOPPING=1 when a drain starts. Without NOTIFY_SOCKET (not run by systemd) or without
// libsystemd at build time every call is a no-op. Sending never fails the caller: a lost
// notification is logged once at debug level.
//
// WatchdogHeartbeat: WATCHDOG=1 pings driven by the engine loop's own progress. It pings every
// interval/2 only while the loop's last iteration is younger than interval/2, so an engine
// thread that wedges (a step that never returns, a deadlock) stops the pings and the service
// manager restarts the daemon after WatchdogSec.
//
// Thread safety: ServiceNotifier's methods may be called from any thread (sd_notify is a
// datagram per call). WatchdogHeartbeat owns one thread, joined by its destructor.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace engram {

class ServiceNotifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (sd_watchdog_enabled) once.
  ServiceNotifier();

  // Whether engramd was built with libsystemd (CMake found it through pkg-config).
  static bool Supported();
  // NOTIFY_SOCKET is set and the build supports it: notifications go somewhere.
  bool enabled() const { return enabled_; }
  // WATCHDOG_USEC when the watchdog is meant for this process (WATCHDOG_PID unset or equal to
  // getpid()); zero when no watchdog is asked for.
  std::chrono::microseconds watchdog_interval() const { return watchdog_; }

  void Status(std::string_view text) const;      // STATUS=text (one line)
  void Ready(std::string_view status) const;     // READY=1 and STATUS=status
  void Stopping(std::string_view status) const;  // STOPPING=1 and STATUS=status
  void Watchdog() const;                         // WATCHDOG=1

 private:
  void Send(const std::string& message) const;

  bool enabled_ = false;
  std::chrono::microseconds watchdog_{0};
};

class WatchdogHeartbeat {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  // `progress` returns when the watched loop last made progress; `ping` sends one heartbeat.
  // Both are called from the heartbeat's thread. With a zero interval no thread starts.
  WatchdogHeartbeat(std::chrono::microseconds interval, std::function<TimePoint()> progress,
                    std::function<void()> ping);
  ~WatchdogHeartbeat();  // stops and joins the thread

  WatchdogHeartbeat(const WatchdogHeartbeat&) = delete;
  WatchdogHeartbeat& operator=(const WatchdogHeartbeat&) = delete;

  bool running() const { return thread_.joinable(); }

 private:
  void Run();

  const std::chrono::microseconds interval_;
  const std::function<TimePoint()> progress_;
  const std::function<void()> ping_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;    // GUARDED_BY(mu_)
  bool warned_ = false;  // heartbeat thread only: a stale loop was logged
  std::thread thread_;
};

}  // namespace engram
