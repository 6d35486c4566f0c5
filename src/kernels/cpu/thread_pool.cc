#include "kernels/cpu/thread_pool.h"

#include <chrono>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "common/cpu_affinity.h"

namespace engram {
namespace {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long an idle worker spins before it sleeps.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(200);

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads < 1) num_threads = 1;
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_seq_cst);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

namespace {
constexpr uint64_t kClosed = uint64_t{1} << 31;
constexpr uint64_t kActiveMask = kClosed - 1;
}  // namespace

void ThreadPool::Dispatch(int64_t num_tasks, CallFn call, void* ctx) {
  call_ = call;
  ctx_ = ctx;
  num_tasks_ = num_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  const uint32_t gen = ++last_generation_;
  state_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
  generation_.store(gen, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) generation_.notify_all();
  RunTasks(0);
  // No worker may join from now on; wait for those inside (they finish their claimed tasks).
  state_.fetch_or(kClosed, std::memory_order_acq_rel);
  int spins = 0;
  while ((state_.load(std::memory_order_acquire) & kActiveMask) != 0) {
    if (++spins < 4096) {
      CpuRelax();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::RunTasks(int thread) {
  for (;;) {
    const int64_t i = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (i >= num_tasks_) return;
    call_(ctx_, i, thread);
  }
}

bool ThreadPool::TryJoin(uint32_t gen) {
  uint64_t s = state_.load(std::memory_order_acquire);
  for (;;) {
    if ((s >> 32) != gen || (s & kClosed) != 0) return false;
    if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      return true;
    }
  }
}

void ThreadPool::WorkerLoop(int thread) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t gen = generation_.load(std::memory_order_acquire);
    if (gen == seen) {
      auto start = std::chrono::steady_clock::now();
      for (int spins = 0; gen == seen; ++spins) {
        CpuRelax();
        gen = generation_.load(std::memory_order_acquire);
        if ((spins & 255) == 255 && std::chrono::steady_clock::now() - start > kSpinBeforeSleep) {
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          generation_.wait(seen, std::memory_order_seq_cst);
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
          gen = generation_.load(std::memory_order_acquire);
          start = std::chrono::steady_clock::now();
        }
      }
    }
    seen = gen;
    if (stop_.load(std::memory_order_acquire)) return;
    if (TryJoin(gen)) {
      RunTasks(thread);
      state_.fetch_sub(1, std::memory_order_release);
    }
  }
}

int PhysicalCoreCount() {
  const std::vector<int> cpus = AllowedCpus();
  if (cpus.empty()) {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
  }
  std::set<std::pair<std::string, std::string>> cores;
  const int logical = static_cast<int>(cpus.size());
  for (const int cpu : cpus) {
    const std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    std::ifstream pkg(base + "physical_package_id"), core(base + "core_id");
    std::string p, c;
    if (!(pkg >> p) || !(core >> c)) {
      p = "cpu";
      c = std::to_string(cpu);
    }
    cores.emplace(p, c);
  }
  const int n = cores.empty() ? logical : static_cast<int>(cores.size());
  return n < 1 ? 1 : n;
}

}  // namespace engram
