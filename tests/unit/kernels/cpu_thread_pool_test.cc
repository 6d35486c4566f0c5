// The CPU backend's thread pool: every task runs exactly once, jobs back to back, sleeps.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "kernels/cpu/thread_pool.h"

namespace engram {
namespace {

TEST(ThreadPool, RunsEveryTaskOnceOverManyJobs) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.num_threads(), 3);
  for (int job = 0; job < 2000; ++job) {
    const int64_t n = job % 37;
    std::vector<std::atomic<int>> hits(n);
    std::atomic<int> bad_thread{0};
    pool.ParallelFor(n, [&](int64_t i, int thread) {
      hits[i].fetch_add(1);
      if (thread < 0 || thread >= 3) bad_thread.fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "job " << job;
    ASSERT_EQ(bad_thread.load(), 0);
  }
}

TEST(ThreadPool, WakesWorkersAfterTheySleep) {
  ThreadPool pool(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // workers now asleep
  std::atomic<int> sum{0};
  pool.ParallelFor(100, [&](int64_t i, int) { sum.fetch_add(static_cast<int>(i)); });
  EXPECT_EQ(sum.load(), 4950);
}

TEST(ThreadPool, ParallelRangeCoversTheRange) {
  ThreadPool pool(2);
  for (int64_t n : {0, 1, 7, 1000, 100001}) {
    std::vector<int> seen(n, 0);
    ParallelRange(pool, n, 10, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) ++seen[i];
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1);
  }
}

TEST(ThreadPool, SingleThreadRunsInline) {
  ThreadPool pool(0);
  EXPECT_EQ(pool.num_threads(), 1);
  const auto me = std::this_thread::get_id();
  pool.ParallelFor(5, [&](int64_t, int thread) {
    EXPECT_EQ(std::this_thread::get_id(), me);
    EXPECT_EQ(thread, 0);
  });
  EXPECT_GE(PhysicalCoreCount(), 1);
}

}  // namespace
}  // namespace engram
