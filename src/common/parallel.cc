#include "common/parallel.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace engram {

int DefaultThreads(int requested) {
  if (requested > 0) return requested;
  return static_cast<int>(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
}

Status ParallelFor(size_t jobs, int threads, const std::function<Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first;
  auto worker = [&] {
    while (!failed.load(std::memory_order_relaxed)) {
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= jobs) return;
      Status st = fn(i);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = std::move(st);
        failed.store(true, std::memory_order_relaxed);
        return;
      }
    }
  };
  const size_t n = std::clamp<size_t>(static_cast<size_t>(DefaultThreads(threads)), 1,
                                      std::max<size_t>(jobs, 1));
  std::vector<std::thread> pool;
  try {
    pool.reserve(n - 1);
    for (size_t k = 1; k < n; ++k) pool.emplace_back(worker);
  } catch (const std::exception&) {
    // Fewer threads: the ones running (and this one) take the remaining jobs.
  }
  worker();
  for (std::thread& t : pool) t.join();
  return first;
}

}  // namespace engram
