#include "common/mapped_files.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>

#include "common/logging.h"

namespace engram {
namespace {

constexpr size_t kSlots = 1024;  // shards of one model; far more than any checkpoint has

struct Slot {
  std::atomic<uintptr_t> base{0};  // 0: free
  std::atomic<size_t> len{0};
  std::atomic<bool> faulted{false};
  std::atomic<uintptr_t> fault_addr{0};
  // Set and read under g_mu only (never from the handler).
  int fd = -1;
  std::string path;
  int64_t size = 0;
  timespec mtime{};
  std::string broken;  // sticky, once found broken
};

std::array<Slot, kSlots> g_slots;
std::mutex g_mu;  // registration and CheckMappedFiles
std::atomic<uint64_t> g_faults{0};
std::once_flag g_install;

void OnSigbus(int sig, siginfo_t* info, void*) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (Slot& s : g_slots) {
    const uintptr_t base = s.base.load(std::memory_order_acquire);
    if (base == 0) continue;
    const size_t len = s.len.load(std::memory_order_relaxed);
    if (addr < base || addr >= base + len) continue;
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t from = addr & ~(page - 1);
    // Zero pages over the rest of the mapping: the file has no bytes there any more.
    void* p = ::mmap(reinterpret_cast<void*>(from), base + len - from, PROT_READ,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) break;  // cannot recover: fall through to the default action
    if (!s.faulted.exchange(true)) s.fault_addr.store(addr - base);
    g_faults.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // Not ours: the default action (the faulting access repeats and kills the process).
  ::signal(sig, SIG_DFL);
}

void Install() {
  struct sigaction sa {};
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

}  // namespace

int RegisterMappedFile(const void* base, size_t len, int fd, const std::string& path) {
  std::call_once(g_install, Install);
  struct stat st {};
  ::fstat(fd, &st);
  std::lock_guard<std::mutex> lock(g_mu);
  for (size_t i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[i];
    if (s.base.load() != 0) continue;
    s.fd = fd;
    s.path = path;
    s.size = st.st_size;
    s.mtime = st.st_mtim;
    s.faulted = false;
    s.broken.clear();
    s.len.store(len);
    s.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
    return static_cast<int>(i);
  }
  ::close(fd);
  static std::once_flag warned;
  std::call_once(warned, [&] {
    spdlog::warn(
        "{}: more than {} mapped model files; this one is not protected against "
        "truncation while served",
        path, kSlots);
  });
  return -1;
}

void UnregisterMappedFile(int handle) {
  if (handle < 0 || static_cast<size_t>(handle) >= kSlots) return;
  std::lock_guard<std::mutex> lock(g_mu);
  Slot& s = g_slots[static_cast<size_t>(handle)];
  s.base.store(0, std::memory_order_release);
  s.len.store(0);
  if (s.fd >= 0) ::close(s.fd);
  s.fd = -1;
  s.path.clear();
  s.broken.clear();
}

Status CheckMappedFiles() {
  std::lock_guard<std::mutex> lock(g_mu);
  for (Slot& s : g_slots) {
    if (s.base.load() == 0) continue;
    if (s.broken.empty() && s.faulted.load()) {
      s.broken = fmt::format(
          "{}: the file shrank while engramd served it (a read at byte {} of its mapping found "
          "no data)",
          s.path, s.fault_addr.load());
    }
    struct stat st {};
    if (s.broken.empty() && ::fstat(s.fd, &st) == 0 &&
        (st.st_size != s.size || st.st_mtim.tv_sec != s.mtime.tv_sec ||
         st.st_mtim.tv_nsec != s.mtime.tv_nsec)) {
      s.broken = fmt::format(
          "{}: the file changed while engramd served it (size {} -> {} bytes{}; replace model "
          "files by rename, never in place)",
          s.path, s.size, static_cast<int64_t>(st.st_size),
          st.st_size == s.size ? ", modified" : "");
    }
    if (!s.broken.empty()) {
      return DataLoss("{}; the model is broken until engramd restarts", s.broken);
    }
  }
  return Status::Ok();
}

uint64_t MappedFileFaults() { return g_faults.load(std::memory_order_relaxed); }

}  // namespace engram
