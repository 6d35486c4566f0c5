#include "tiering/host_memory.h"

#include <fmt/ranges.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <utility>

#include "common/logging.h"
#include "common/parallel.h"

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)
#endif

namespace engram {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

size_t RoundUp(size_t value, size_t align) { return (value + align - 1) / align * align; }

size_t SmallPageBytes() {
  long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? static_cast<size_t>(page) : 4096;
}

std::string ReadFirstLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return "?";
  return line;
}

// The bracketed word of /sys/kernel/mm/transparent_hugepage/enabled ("always [madvise] never").
std::string ThpMode() {
  std::string line = ReadFirstLine("/sys/kernel/mm/transparent_hugepage/enabled");
  size_t open = line.find('['), close = line.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return "";
  return line.substr(open + 1, close - open - 1);
}

// Warn the first time a kind of fallback happens in this process; debug afterwards, so a
// model with many tables does not repeat the same warning per table.
void LogFallback(std::atomic<bool>& warned, const std::string& label, const std::string& what) {
  const char* name = label.empty() ? "host allocation" : label.c_str();
  if (!warned.exchange(true)) {
    spdlog::warn("{}: {}", name, what);
  } else {
    spdlog::debug("{}: {}", name, what);
  }
}

std::atomic<bool> g_warned_hugetlb{false};
std::atomic<bool> g_warned_thp{false};
std::atomic<bool> g_warned_policy{false};
std::atomic<bool> g_warned_pin{false};

constexpr int kProt = PROT_READ | PROT_WRITE;
constexpr int kAnon = MAP_PRIVATE | MAP_ANONYMOUS;

void* MapHugetlb(size_t len, std::string* why) {
  void* p = mmap(nullptr, len, kProt, kAnon | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
  if (p != MAP_FAILED) return p;
  const int err = errno;
  *why = fmt::format(
      "2 MiB hugetlb pages unavailable (mmap MAP_HUGETLB: {}; nr_hugepages={}, free={}), "
      "falling back",
      std::strerror(err), ReadFirstLine("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
      ReadFirstLine("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"));
  return nullptr;
}

// An anonymous mapping of `len` (a multiple of 2 MiB) starting on a 2 MiB boundary.
void* MapAligned(size_t len, int* err) {
  const size_t span = len + kHugePageBytes;
  void* raw = mmap(nullptr, span, kProt, kAnon, -1, 0);
  if (raw == MAP_FAILED) {
    *err = errno;
    return nullptr;
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = RoundUp(start, kHugePageBytes);
  const size_t head = aligned - start;
  const size_t tail = span - head - len;
  if (head > 0) munmap(raw, head);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + len), tail);
  return reinterpret_cast<void*>(aligned);
}

struct NodemaskDeleter {
  void operator()(bitmask* mask) const { numa_free_nodemask(mask); }
};

bool NodeAllowed(int node) {
  return node >= 0 && node <= numa_max_node() && numa_bitmask_isbitset(numa_all_nodes_ptr, node);
}

// Sets the mapping's NUMA policy. Only a bad node list is an error; an unusable NUMA
// facility is recorded in `info` and skipped.
Status ApplyPolicy(void* addr, size_t len, const HostAllocOptions& options, HostAllocInfo& info,
                   const std::string& label) {
  info.policy_requested = options.policy;
  if (options.policy == NumaPolicy::kNone) {
    info.policy_applied = true;
    return Status::Ok();
  }
  if (numa_available() < 0) {
    info.policy_note = "libnuma reports no NUMA support (numa_available() < 0); policy skipped";
    LogFallback(g_warned_policy, label, info.policy_note);
    return Status::Ok();
  }
  std::unique_ptr<bitmask, NodemaskDeleter> mask(numa_allocate_nodemask());
  if (options.policy == NumaPolicy::kBind) {
    if (!NodeAllowed(options.node)) {
      return InvalidArgument("NUMA bind node {} is not an allowed node (max node {})", options.node,
                             numa_max_node());
    }
    numa_bitmask_setbit(mask.get(), options.node);
  } else if (options.interleave_nodes.empty()) {
    copy_bitmask_to_bitmask(numa_all_nodes_ptr, mask.get());
  } else {
    for (int node : options.interleave_nodes) {
      if (!NodeAllowed(node)) {
        return InvalidArgument("NUMA interleave node {} is not an allowed node (max node {})", node,
                               numa_max_node());
      }
      numa_bitmask_setbit(mask.get(), node);
    }
  }
  const int mode = options.policy == NumaPolicy::kBind ? MPOL_BIND : MPOL_INTERLEAVE;
  if (mbind(addr, len, mode, mask->maskp, mask->size + 1, 0) != 0) {
    info.policy_note = fmt::format("mbind({}) failed: {}; policy skipped",
                                   NumaPolicyName(options.policy), std::strerror(errno));
    LogFallback(g_warned_policy, label, info.policy_note);
    return Status::Ok();
  }
  info.policy_applied = true;
  return Status::Ok();
}

// Writes one byte per page so every page is faulted in (placed by the policy) now.
void Populate(char* base, size_t len, size_t step, int threads) {
  const size_t pages = len / step;
  const size_t slices = std::min<size_t>(DefaultThreads(threads), std::max<size_t>(pages, 1));
  const size_t per = (pages + slices - 1) / slices;
  (void)ParallelFor(slices, static_cast<int>(slices), [=](size_t s) {
    volatile char* p = base;
    for (size_t i = s * per; i < (s + 1) * per && i < pages; ++i) p[i * step] = 0;
    return Status::Ok();
  });
}

}  // namespace

uint64_t PhysicalMemoryBytes() {
  long pages = sysconf(_SC_PHYS_PAGES);
  return pages > 0 ? static_cast<uint64_t>(pages) * SmallPageBytes() : 0;
}

const char* PageKindName(PageKind kind) {
  switch (kind) {
    case PageKind::kHugetlb2M:
      return "hugetlb_2m";
    case PageKind::kTransparentHuge:
      return "thp";
    case PageKind::kNormal:
      return "normal";
  }
  return "?";
}

const char* NumaPolicyName(NumaPolicy policy) {
  switch (policy) {
    case NumaPolicy::kNone:
      return "none";
    case NumaPolicy::kBind:
      return "bind";
    case NumaPolicy::kInterleave:
      return "interleave";
  }
  return "?";
}

std::string HostAllocInfo::Summary() const {
  std::string out =
      fmt::format("{} bytes ({} mapped), pages {}", bytes, mapped_bytes, PageKindName(page));
  if (!page_fallback.empty()) out += fmt::format(" ({})", page_fallback);
  out += fmt::format(", policy {} {}", NumaPolicyName(policy_requested),
                     policy_applied ? "applied" : "skipped");
  if (!policy_note.empty()) out += fmt::format(" ({})", policy_note);
  out += populated ? ", populated" : ", not populated";
  out += pinned ? ", pinned" : ", unpinned";
  if (!pin_status.ok()) out += fmt::format(" ({})", pin_status.ToString());
  return out;
}

HostAllocation::~HostAllocation() { Release(); }

HostAllocation::HostAllocation(HostAllocation&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      info_(std::move(other.info_)),
      unregister_(std::move(other.unregister_)) {
  other.unregister_ = nullptr;
}

HostAllocation& HostAllocation::operator=(HostAllocation&& other) noexcept {
  if (this != &other) {
    Release();
    data_ = std::exchange(other.data_, nullptr);
    info_ = std::move(other.info_);
    unregister_ = std::move(other.unregister_);
    other.unregister_ = nullptr;
  }
  return *this;
}

void HostAllocation::Release() {
  if (data_ == nullptr) return;
  if (info_.pinned && unregister_) unregister_(data_, info_.mapped_bytes);
  munmap(data_, info_.mapped_bytes);
  data_ = nullptr;
}

Result<Tensor> HostAllocation::View(DType dtype, std::vector<int64_t> shape) const {
  if (data_ == nullptr) return FailedPrecondition("View of an empty host allocation");
  size_t need = DTypeSize(dtype);
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("View shape has a negative dimension {}", d);
    if (d != 0 && need > info_.bytes / static_cast<size_t>(d)) {
      return OutOfRange("View {} x {} elements exceeds the allocation's {} bytes", DTypeName(dtype),
                        fmt::join(shape, "x"), info_.bytes);
    }
    need *= static_cast<size_t>(d);
  }
  return HostView(data_, dtype, std::move(shape));
}

Result<HostAllocation> AllocateHost(const HostAllocOptions& options) {
  const std::string& label = options.label;
  if (options.bytes == 0) return InvalidArgument("host allocation of 0 bytes");
  const uint64_t physical = PhysicalMemoryBytes();
  if (physical > 0 && options.bytes > physical) {
    return ResourceExhausted(
        "host allocation of {} bytes ({:.1f} GiB) exceeds physical memory ({:.1f} GiB)",
        options.bytes, options.bytes / kGiB, physical / kGiB);
  }

  HostAllocation alloc;
  HostAllocInfo& info = alloc.info_;
  info.bytes = options.bytes;
  std::string fallback;

  if (options.page == PageRequest::kHugetlb2M) {
    const size_t len = RoundUp(options.bytes, kHugePageBytes);
    std::string why;
    if (void* p = MapHugetlb(len, &why)) {
      alloc.data_ = p;
      info.mapped_bytes = len;
      info.page = PageKind::kHugetlb2M;
    } else {
      LogFallback(g_warned_hugetlb, label, why);
      fallback = why;
    }
  }
  if (alloc.data_ == nullptr && options.page != PageRequest::kNormal) {
    const size_t len = RoundUp(options.bytes, kHugePageBytes);
    int err = 0;
    if (void* p = MapAligned(len, &err)) {
      alloc.data_ = p;
      info.mapped_bytes = len;
      const std::string mode = ThpMode();
      std::string why;
      if (mode == "never") {
        why = "transparent huge pages disabled (transparent_hugepage/enabled = never)";
      } else if (madvise(p, len, MADV_HUGEPAGE) != 0) {
        why = fmt::format("madvise(MADV_HUGEPAGE) failed: {}", std::strerror(errno));
      }
      if (why.empty()) {
        info.page = PageKind::kTransparentHuge;
      } else {
        info.page = PageKind::kNormal;
        why += "; using normal pages (2 MiB aligned)";
        LogFallback(g_warned_thp, label, why);
        fallback += (fallback.empty() ? "" : "; ") + why;
      }
    } else {
      fallback += fmt::format("{}2 MiB-aligned mapping failed: {}", fallback.empty() ? "" : "; ",
                              std::strerror(err));
    }
  }
  if (alloc.data_ == nullptr) {
    const size_t len = RoundUp(options.bytes, SmallPageBytes());
    void* p = mmap(nullptr, len, kProt, kAnon, -1, 0);
    if (p == MAP_FAILED) {
      return ResourceExhausted("host allocation of {} bytes ({:.1f} GiB) failed: mmap: {}{}",
                               options.bytes, options.bytes / kGiB, std::strerror(errno),
                               fallback.empty() ? "" : " (after: " + fallback + ")");
    }
    alloc.data_ = p;
    info.mapped_bytes = len;
    info.page = PageKind::kNormal;
  }
  info.page_fallback = std::move(fallback);

  ENGRAM_RETURN_IF_ERROR(ApplyPolicy(alloc.data_, info.mapped_bytes, options, info, label));

  if (options.populate) {
    const size_t step = info.page == PageKind::kHugetlb2M ? kHugePageBytes : SmallPageBytes();
    Populate(static_cast<char*>(alloc.data_), info.mapped_bytes, step, options.populate_threads);
    info.populated = true;
  }

  if (options.register_for_dma) {
    Status pin = options.register_for_dma(alloc.data_, info.mapped_bytes);
    if (pin.ok()) {
      info.pinned = true;
      alloc.unregister_ = options.unregister_for_dma;
    } else {
      info.pin_status = pin;
      LogFallback(g_warned_pin, label,
                  fmt::format("register_for_dma failed ({}); continuing unpinned", pin.ToString()));
    }
  }
  spdlog::debug("{}: {}", label.empty() ? "host allocation" : label, info.Summary());
  return alloc;
}

}  // namespace engram
