// Host memory for Engram tables: one anonymous mapping with a NUMA policy (bind to a node or
// interleave), the largest page size the machine grants, optionally pre-faulted and pinned
// for DMA. Every step degrades instead of failing: 2 MiB hugetlb pages -> transparent huge
// pages (THP) -> normal pages; policy skipped where there is no NUMA; pinning skipped when the
// hook fails. Each fallback is logged (warn the first time per process, debug after) and
// recorded in HostAllocInfo, which the metrics and GetModelInfo report.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"
#include "kernels/tensor.h"

namespace engram {

// Page size requested, best first; a request falls back along hugetlb -> THP -> normal.
enum class PageRequest : uint8_t { kHugetlb2M, kTransparentHuge, kNormal };
// Page size obtained.
enum class PageKind : uint8_t { kHugetlb2M, kTransparentHuge, kNormal };
enum class NumaPolicy : uint8_t { kNone, kBind, kInterleave };

const char* PageKindName(PageKind kind);        // "hugetlb_2m", "thp", "normal"
const char* NumaPolicyName(NumaPolicy policy);  // "none", "bind", "interleave"

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// The machine's physical memory (sysconf); 0 when unknown.
uint64_t PhysicalMemoryBytes();

struct HostAllocOptions {
  size_t bytes = 0;  // > 0
  PageRequest page = PageRequest::kHugetlb2M;
  NumaPolicy policy = NumaPolicy::kNone;
  int node = 0;                       // kBind: the OS node index
  std::vector<int> interleave_nodes;  // kInterleave: OS node indices; empty = all allowed
  // Pre-fault every page (after the policy is set, so placement follows it) with
  // `populate_threads` threads (0 = min(hardware threads, 8)).
  bool populate = false;
  int populate_threads = 0;
  // Optional pinning (e.g. cudaHostRegister), called once with (data, mapped_bytes) after
  // populating. On failure the allocation stays usable, unpinned, with the failure recorded.
  std::function<Status(void*, size_t)> register_for_dma;
  // Called before unmapping when register_for_dma succeeded (e.g. cudaHostUnregister).
  std::function<void(void*, size_t)> unregister_for_dma;
  std::string label;  // names the allocation in logs ("engram table layer 2")
};

// What an allocation actually got.
struct HostAllocInfo {
  size_t bytes = 0;         // requested
  size_t mapped_bytes = 0;  // mapped (bytes rounded up to the page size)
  PageKind page = PageKind::kNormal;
  std::string page_fallback;  // why `page` is below the request; empty when it is not
  NumaPolicy policy_requested = NumaPolicy::kNone;
  bool policy_applied = false;  // true also when kNone was requested
  std::string policy_note;      // why the policy was skipped; empty when applied
  bool populated = false;
  bool pinned = false;
  Status pin_status;  // the register_for_dma failure, OK otherwise

  // "8388608 bytes, thp (hugetlb: ...), policy interleave applied, populated, unpinned (...)"
  std::string Summary() const;
};

// Owns one mapping; munmaps (after unregister_for_dma when pinned) on destruction. Move-only.
class HostAllocation {
 public:
  HostAllocation() = default;
  ~HostAllocation();
  HostAllocation(HostAllocation&& other) noexcept;
  HostAllocation& operator=(HostAllocation&& other) noexcept;
  HostAllocation(const HostAllocation&) = delete;
  HostAllocation& operator=(const HostAllocation&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return info_.bytes; }
  bool empty() const { return data_ == nullptr; }
  const HostAllocInfo& info() const { return info_; }

  // A non-owning CPU tensor over the start of the allocation (valid while it lives).
  // OUT_OF_RANGE when the shape needs more than bytes().
  Result<Tensor> View(DType dtype, std::vector<int64_t> shape) const;

 private:
  friend Result<HostAllocation> AllocateHost(const HostAllocOptions& options);
  void Release();

  void* data_ = nullptr;
  HostAllocInfo info_;
  std::function<void(void*, size_t)> unregister_;
};

// INVALID_ARGUMENT for 0 bytes or a bad node list; RESOURCE_EXHAUSTED (naming the size) when
// no page size can map `bytes` or it exceeds physical memory.
Result<HostAllocation> AllocateHost(const HostAllocOptions& options);

}  // namespace engram
