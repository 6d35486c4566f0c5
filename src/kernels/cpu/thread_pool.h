// ThreadPool: the CPU backend's persistent compute threads. The calling thread takes part in
// every job as thread 0, so a pool of n threads spawns n - 1 workers. Workers spin briefly
// after a job (decode issues thousands of small jobs per second) and then sleep on a futex.
//
// Thread safety: one caller at a time (the backend's engine thread); jobs must not start
// nested jobs on the same pool.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

namespace engram {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // clamped to >= 1
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(task, thread) for every task in [0, num_tasks); tasks are claimed dynamically by
  // the pool's threads (thread in [0, num_threads())). Returns when all tasks are done.
  template <typename F>
  void ParallelFor(int64_t num_tasks, F&& fn) {
    if (num_tasks <= 0) return;
    if (num_tasks == 1 || workers_.empty()) {
      for (int64_t i = 0; i < num_tasks; ++i) fn(i, 0);
      return;
    }
    Dispatch(num_tasks, &Trampoline<std::remove_reference_t<F>>, &fn);
  }

 private:
  using CallFn = void (*)(void* ctx, int64_t task, int thread);
  template <typename F>
  static void Trampoline(void* ctx, int64_t task, int thread) {
    (*static_cast<F*>(ctx))(task, thread);
  }
  void Dispatch(int64_t num_tasks, CallFn call, void* ctx);
  void RunTasks(int thread);
  bool TryJoin(uint32_t generation);
  void WorkerLoop(int thread);

  // The current job; written by the caller while no worker is joined to a job.
  CallFn call_ = nullptr;
  void* ctx_ = nullptr;
  int64_t num_tasks_ = 0;
  uint32_t last_generation_ = 0;  // caller-only
  alignas(64) std::atomic<int64_t> next_task_{0};
  // Job state: generation << 32 | closed bit | number of workers inside the job. Workers join
  // with a CAS while the job is open; the caller closes it after its own share and waits
  // only for the workers that joined, never for one that is asleep or descheduled.
  alignas(64) std::atomic<uint64_t> state_{0};
  // Bumped for every job; idle workers spin on it, then futex-wait.
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
};

// Splits [0, n) into contiguous chunks of at least `grain` items (up to four per thread)
// and calls fn(begin, end, thread) for each; small ranges run on the caller alone.
template <typename F>
void ParallelRange(ThreadPool& pool, int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t chunks = (n + grain - 1) / grain;
  const int64_t max_chunks = 4 * static_cast<int64_t>(pool.num_threads());
  if (chunks > max_chunks) chunks = max_chunks;
  if (chunks <= 1) {
    fn(int64_t{0}, n, 0);
    return;
  }
  const int64_t size = (n + chunks - 1) / chunks;
  pool.ParallelFor((n + size - 1) / size, [&](int64_t c, int thread) {
    const int64_t begin = c * size;
    const int64_t end = begin + size < n ? begin + size : n;
    fn(begin, end, thread);
  });
}

// Number of physical cores this process may run on (at least 1).
int PhysicalCoreCount();

}  // namespace engram
