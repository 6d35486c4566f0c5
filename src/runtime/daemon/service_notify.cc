#include "runtime/daemon/service_notify.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/logging.h"

#ifdef ENGRAM_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace engram {
namespace {

// STATUS= is one line: newlines would start another assignment.
std::string OneLine(std::string_view text) {
  std::string s(text);
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

}  // namespace

bool ServiceNotifier::Supported() {
#ifdef ENGRAM_HAVE_SYSTEMD
  return true;
#else
  return false;
#endif
}

ServiceNotifier::ServiceNotifier() {
#ifdef ENGRAM_HAVE_SYSTEMD
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && *socket != '\0';
  uint64_t usec = 0;
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0) {
    watchdog_ = std::chrono::microseconds(usec);
  }
#else
  if (std::getenv("NOTIFY_SOCKET") != nullptr) {
    spdlog::warn(
        "NOTIFY_SOCKET is set but engramd was built without libsystemd: no READY=1 will be "
        "sent (use Type=simple, or rebuild with libsystemd-dev installed)");
  }
#endif
}

void ServiceNotifier::Send(const std::string& message) const {
  if (!enabled_) return;
#ifdef ENGRAM_HAVE_SYSTEMD
  const int rc = sd_notify(/*unset_environment=*/0, message.c_str());
  if (rc < 0) {
    spdlog::debug("sd_notify({}): {}", message.substr(0, message.find('\n')), std::strerror(-rc));
  }
#endif
}

void ServiceNotifier::Status(std::string_view text) const { Send("STATUS=" + OneLine(text)); }

void ServiceNotifier::Ready(std::string_view status) const {
  Send("READY=1\nSTATUS=" + OneLine(status));
}

void ServiceNotifier::Stopping(std::string_view status) const {
  Send("STOPPING=1\nSTATUS=" + OneLine(status));
}

void ServiceNotifier::Watchdog() const { Send("WATCHDOG=1"); }

WatchdogHeartbeat::WatchdogHeartbeat(std::chrono::microseconds interval,
                                     std::function<TimePoint()> progress,
                                     std::function<void()> ping)
    : interval_(interval), progress_(std::move(progress)), ping_(std::move(ping)) {
  if (interval_.count() > 0) thread_ = std::thread([this] { Run(); });
}

WatchdogHeartbeat::~WatchdogHeartbeat() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void WatchdogHeartbeat::Run() {
  // sd_watchdog_enabled(3) asks for a ping every half interval; the loop counts as alive while
  // its last iteration is younger than that half, so a wedged loop misses the next ping and
  // the manager acts within about 1.5 intervals.
  const auto half = std::chrono::duration_cast<std::chrono::steady_clock::duration>(interval_) / 2;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    const auto now = std::chrono::steady_clock::now();
    const auto age = now - progress_();
    if (age < half) {
      ping_();
      if (warned_) spdlog::info("watchdog: the engine loop makes progress again");
      warned_ = false;
    } else if (!warned_) {  // once per stall
      warned_ = true;
      spdlog::warn(
          "watchdog: the engine loop has made no progress for {:.1f} s; WATCHDOG=1 withheld "
          "(the service manager restarts engramd after WatchdogSec)",
          std::chrono::duration<double>(age).count());
    }
    cv_.wait_until(lock, now + half, [this] { return stop_; });
  }
}

}  // namespace engram
