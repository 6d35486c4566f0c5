// WatchdogHeartbeat: WATCHDOG=1 pings follow the watched loop's progress (a stalled loop gets
// none), and nothing runs without a watchdog interval. Counts over windows, with generous bounds.
#include "runtime/daemon/service_notify.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace engram {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A stand-in for the engine loop: records a timestamp every 5 ms while running.
class FakeLoop {
 public:
  FakeLoop() : last_(Clock::now().time_since_epoch().count()) {
    thread_ = std::thread([this] {
      while (!quit_) {
        if (!stalled_) last_ = Clock::now().time_since_epoch().count();
        std::this_thread::sleep_for(5ms);
      }
    });
  }
  ~FakeLoop() {
    quit_ = true;
    thread_.join();
  }
  void Stall(bool s) { stalled_ = s; }
  Clock::time_point Progress() const { return Clock::time_point(Clock::duration(last_.load())); }

 private:
  std::atomic<Clock::rep> last_;
  std::atomic<bool> stalled_{false}, quit_{false};
  std::thread thread_;
};

TEST(WatchdogHeartbeat, PingsAtHalfTheIntervalWhileTheLoopProgresses) {
  FakeLoop loop;
  std::atomic<int> pings{0};
  {
    WatchdogHeartbeat hb(
        100ms, [&] { return loop.Progress(); }, [&] { ++pings; });
    EXPECT_TRUE(hb.running());
    std::this_thread::sleep_for(1s);
  }
  // Every 50 ms: about 20 in 1 s.
  EXPECT_GE(pings.load(), 5);
  EXPECT_LE(pings.load(), 40);
}

TEST(WatchdogHeartbeat, AStalledLoopGetsNoPingsUntilItMovesAgain) {
  FakeLoop loop;
  std::atomic<int> pings{0};
  WatchdogHeartbeat hb(
      100ms, [&] { return loop.Progress(); }, [&] { ++pings; });
  std::this_thread::sleep_for(300ms);
  EXPECT_GE(pings.load(), 1);
  loop.Stall(true);
  // Pings may still go out while the last progress is younger than 50 ms; none after.
  std::this_thread::sleep_for(500ms);
  const int stalled = pings.load();
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(pings.load(), stalled) << "pinged for a loop that made no progress for 1.5 s";
  loop.Stall(false);
  std::this_thread::sleep_for(500ms);
  EXPECT_GT(pings.load(), stalled) << "no pings once the loop moved again";
}

TEST(WatchdogHeartbeat, NoIntervalNoThread) {
  std::atomic<int> pings{0};
  WatchdogHeartbeat hb(
      0us, [] { return Clock::now(); }, [&] { ++pings; });
  EXPECT_FALSE(hb.running());
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(pings.load(), 0);
}

}  // namespace
}  // namespace engram
