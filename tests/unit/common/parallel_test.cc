// ParallelFor: every job once, the first error returned, the thread count rules.
#include "common/parallel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace engram {
namespace {

// Runs `jobs` jobs that each sleep a little, returning the ids of the threads that ran them.
std::set<std::thread::id> ThreadsUsed(size_t jobs, int threads) {
  std::mutex mu;
  std::set<std::thread::id> ids;
  Status st = ParallelFor(jobs, threads, [&](size_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
    return Status::Ok();
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return ids;
}

TEST(ParallelFor, RunsEveryJobOnce) {
  for (int threads : {1, 2, 3, 8, 0, -1}) {
    for (size_t jobs : {0, 1, 5, 1000}) {
      std::vector<std::atomic<int>> hits(jobs);
      Status st = ParallelFor(jobs, threads, [&](size_t i) {
        hits[i].fetch_add(1);
        return Status::Ok();
      });
      ASSERT_TRUE(st.ok()) << st.ToString();
      for (size_t i = 0; i < jobs; ++i) {
        ASSERT_EQ(hits[i].load(), 1) << "job " << i << " of " << jobs << ", " << threads;
      }
    }
  }
}

TEST(ParallelFor, ReturnsTheFirstErrorAndStops) {
  // One thread: jobs run in order, so the first failing job's error is returned and no job
  // after it runs.
  std::vector<int> ran;
  Status st = ParallelFor(10, 1, [&](size_t i) {
    ran.push_back(static_cast<int>(i));
    if (i == 3) return NotFound("job {}", i);
    if (i == 6) return DataLoss("job {}", i);
    return Status::Ok();
  });
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(st.message(), "job 3");
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2, 3}));

  // Several threads: the one failing job's error comes back.
  std::atomic<int> calls{0};
  st = ParallelFor(200, 4, [&](size_t i) {
    calls.fetch_add(1);
    return i == 17 ? Internal("job {}", i) : Status::Ok();
  });
  EXPECT_EQ(st.code(), StatusCode::kInternal);
  EXPECT_EQ(st.message(), "job 17");
  EXPECT_LE(calls.load(), 200);
}

TEST(ParallelFor, ThreadsZeroOrLessIsTheDefault) {
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  EXPECT_EQ(DefaultThreads(0), std::min(hw, 8));
  EXPECT_EQ(DefaultThreads(-2), std::min(hw, 8));
  EXPECT_EQ(DefaultThreads(5), 5);
  EXPECT_EQ(DefaultThreads(64), 64);
  EXPECT_LE(ThreadsUsed(64, 0).size(), static_cast<size_t>(DefaultThreads(0)));
  EXPECT_LE(ThreadsUsed(64, -1).size(), static_cast<size_t>(DefaultThreads(0)));
}

TEST(ParallelFor, NeverMoreThreadsThanJobs) {
  EXPECT_LE(ThreadsUsed(3, 16).size(), 3u);
  EXPECT_EQ(ThreadsUsed(1, 16), std::set<std::thread::id>{std::this_thread::get_id()})
      << "a single job runs on the calling thread";
  EXPECT_EQ(ThreadsUsed(20, 1), std::set<std::thread::id>{std::this_thread::get_id()});
  EXPECT_TRUE(ThreadsUsed(0, 16).empty());
}

}  // namespace
}  // namespace engram
