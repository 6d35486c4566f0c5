#include "tiering/host_memory.h"

#include <gtest/gtest.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

namespace engram {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

// The /proc/self/smaps fields ("KernelPageSize" -> "2048 kB") of the mapping holding `addr`.
std::map<std::string, std::string> SmapsOf(const void* addr) {
  std::ifstream in("/proc/self/smaps");
  std::map<std::string, std::string> fields;
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  bool inside = false;
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    const size_t dash = line.find('-');
    const bool header = dash != std::string::npos && (colon == std::string::npos || dash < colon);
    if (header) {
      if (inside) break;
      uintptr_t start = 0, end = 0;
      std::istringstream range(line.substr(0, line.find(' ')));
      char sep;
      range >> std::hex >> start >> sep >> end;
      inside = a >= start && a < end;
    } else if (inside && colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      fields[line.substr(0, colon)] = value;
    }
  }
  return fields;
}

std::string ReadLine(const char* path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

size_t KiB(const std::string& field) { return std::stoull(field); }  // "2048 kB" -> 2048

bool IsMapped(void* addr) { return msync(addr, 4096, MS_ASYNC) == 0 || errno != ENOMEM; }

void WriteAndCheck(const HostAllocation& alloc) {
  auto* p = static_cast<unsigned char*>(alloc.data());
  for (size_t off = 0; off < alloc.bytes(); off += 4096)
    p[off] = static_cast<unsigned char>(off >> 12);
  p[alloc.bytes() - 1] = 0xab;
  for (size_t off = 0; off < alloc.bytes(); off += 4096) {
    ASSERT_EQ(p[off], static_cast<unsigned char>(off >> 12)) << off;
  }
  EXPECT_EQ(p[alloc.bytes() - 1], 0xab);
}

class PageRequestTest : public ::testing::TestWithParam<PageRequest> {};

TEST_P(PageRequestTest, AllocatesWhatItReports) {
  HostAllocOptions options;
  options.bytes = 8 * kMiB;
  options.page = GetParam();
  options.label = "test table";
  auto alloc = AllocateHost(options);
  ASSERT_TRUE(alloc.ok()) << alloc.status().ToString();
  const HostAllocInfo& info = alloc->info();
  std::cout << "request " << static_cast<int>(GetParam()) << ": " << info.Summary() << "\n";
  EXPECT_EQ(info.bytes, 8 * kMiB);
  EXPECT_GE(info.mapped_bytes, info.bytes);
  WriteAndCheck(*alloc);

  if (GetParam() != PageRequest::kNormal) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(alloc->data()) % kHugePageBytes, 0u);
  }
  // Never better than requested; below the request only with the reason recorded.
  const int got = static_cast<int>(info.page), wanted = static_cast<int>(GetParam());
  EXPECT_GE(got, wanted);
  if (got > wanted) {
    EXPECT_FALSE(info.page_fallback.empty());
  } else {
    EXPECT_TRUE(info.page_fallback.empty()) << info.page_fallback;
  }
  if (GetParam() == PageRequest::kHugetlb2M &&
      ReadLine("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") == "0") {
    EXPECT_NE(info.page, PageKind::kHugetlb2M);
    EXPECT_NE(info.page_fallback.find("hugetlb"), std::string::npos) << info.page_fallback;
  }

  auto smaps = SmapsOf(alloc->data());
  ASSERT_TRUE(smaps.count("KernelPageSize")) << "no smaps entry";
  switch (info.page) {
    case PageKind::kHugetlb2M:
      EXPECT_EQ(KiB(smaps["KernelPageSize"]), 2048u);
      break;
    case PageKind::kTransparentHuge:
      EXPECT_EQ(KiB(smaps["KernelPageSize"]), 4u);
      if (smaps.count("THPeligible")) {
        EXPECT_EQ(smaps["THPeligible"], "1");
      }
      break;
    case PageKind::kNormal:
      EXPECT_EQ(KiB(smaps["KernelPageSize"]), 4u);
      break;
  }
}

INSTANTIATE_TEST_SUITE_P(AllRequests, PageRequestTest,
                         ::testing::Values(PageRequest::kHugetlb2M, PageRequest::kTransparentHuge,
                                           PageRequest::kNormal));

TEST(HostMemoryTest, PopulateFaultsEveryPageWithThreads) {
  HostAllocOptions options;
  options.bytes = 8 * kMiB + 123;  // not a page multiple
  options.page = PageRequest::kTransparentHuge;
  options.populate = true;
  options.populate_threads = 3;
  auto alloc = AllocateHost(options);
  ASSERT_TRUE(alloc.ok()) << alloc.status().ToString();
  EXPECT_TRUE(alloc->info().populated);
  auto smaps = SmapsOf(alloc->data());
  ASSERT_TRUE(smaps.count("Rss"));
  EXPECT_GE(KiB(smaps["Rss"]) * 1024, options.bytes);
  std::cout << "populated THP mapping: Rss " << smaps["Rss"] << ", AnonHugePages "
            << smaps["AnonHugePages"] << "\n";
  WriteAndCheck(*alloc);
}

TEST(HostMemoryTest, BindAndInterleaveOnThisMachine) {
  for (NumaPolicy policy : {NumaPolicy::kBind, NumaPolicy::kInterleave}) {
    HostAllocOptions options;
    options.bytes = 4 * kMiB;
    options.page = PageRequest::kTransparentHuge;
    options.policy = policy;
    options.node = 0;
    options.populate = true;
    auto alloc = AllocateHost(options);
    ASSERT_TRUE(alloc.ok()) << alloc.status().ToString();
    const HostAllocInfo& info = alloc->info();
    std::cout << NumaPolicyName(policy) << ": " << info.Summary() << "\n";
    EXPECT_EQ(info.policy_requested, policy);
    if (info.policy_applied) {
      EXPECT_TRUE(info.policy_note.empty());
      int mode = -1;
      ASSERT_EQ(get_mempolicy(&mode, nullptr, 0, alloc->data(), MPOL_F_ADDR), 0)
          << std::strerror(errno);
      EXPECT_EQ(mode, policy == NumaPolicy::kBind ? MPOL_BIND : MPOL_INTERLEAVE);
    } else {
      EXPECT_FALSE(info.policy_note.empty());
    }
    WriteAndCheck(*alloc);
  }
}

TEST(HostMemoryTest, BadNodesAreInvalidArgument) {
  if (numa_available() < 0) GTEST_SKIP() << "no NUMA: policies are skipped, not validated";
  HostAllocOptions options;
  options.bytes = kMiB;
  options.policy = NumaPolicy::kBind;
  options.node = 4096;
  auto bind = AllocateHost(options);
  ASSERT_FALSE(bind.ok());
  EXPECT_EQ(bind.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bind.status().message().find("4096"), std::string::npos);
  options.policy = NumaPolicy::kInterleave;
  options.interleave_nodes = {0, -1};
  auto interleave = AllocateHost(options);
  ASSERT_FALSE(interleave.ok());
  EXPECT_EQ(interleave.status().code(), StatusCode::kInvalidArgument);
}

TEST(HostMemoryTest, FailingPinHookLeavesUsableUnpinnedMemory) {
  int unregistered = 0;
  HostAllocOptions options;
  options.bytes = 8 * kMiB;
  options.register_for_dma = [](void*, size_t) { return Unavailable("no device to pin for"); };
  options.unregister_for_dma = [&](void*, size_t) { ++unregistered; };
  {
    auto alloc = AllocateHost(options);
    ASSERT_TRUE(alloc.ok()) << alloc.status().ToString();
    EXPECT_FALSE(alloc->info().pinned);
    EXPECT_EQ(alloc->info().pin_status.code(), StatusCode::kUnavailable);
    EXPECT_NE(alloc->info().Summary().find("no device to pin for"), std::string::npos);
    WriteAndCheck(*alloc);
  }
  EXPECT_EQ(unregistered, 0);  // never pinned, never unpinned
}

TEST(HostMemoryTest, PinHookSeesTheMappingAndIsUndoneOnce) {
  void* registered = nullptr;
  size_t registered_bytes = 0;
  int unregistered = 0;
  HostAllocOptions options;
  options.bytes = 3 * kMiB;
  options.register_for_dma = [&](void* p, size_t n) {
    registered = p;
    registered_bytes = n;
    return Status::Ok();
  };
  options.unregister_for_dma = [&](void* p, size_t) {
    EXPECT_EQ(p, registered);
    ++unregistered;
  };
  {
    auto alloc = AllocateHost(options);
    ASSERT_TRUE(alloc.ok()) << alloc.status().ToString();
    EXPECT_TRUE(alloc->info().pinned);
    EXPECT_EQ(registered, alloc->data());
    EXPECT_EQ(registered_bytes, alloc->info().mapped_bytes);
  }
  EXPECT_EQ(unregistered, 1);
}

TEST(HostMemoryTest, ImpossibleSizeIsResourceExhausted) {
  HostAllocOptions options;
  options.bytes = size_t{1} << 50;  // 1 PiB
  auto alloc = AllocateHost(options);
  ASSERT_FALSE(alloc.ok());
  EXPECT_EQ(alloc.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(alloc.status().message().find("1125899906842624"), std::string::npos)
      << alloc.status().message();
}

TEST(HostMemoryTest, ZeroBytesIsInvalidArgument) {
  auto alloc = AllocateHost(HostAllocOptions{});
  ASSERT_FALSE(alloc.ok());
  EXPECT_EQ(alloc.status().code(), StatusCode::kInvalidArgument);
}

TEST(HostMemoryTest, MoveFreesExactlyOnce) {
  int unregistered = 0;
  HostAllocOptions options;
  options.bytes = 2 * kMiB;
  options.register_for_dma = [](void*, size_t) { return Status::Ok(); };
  options.unregister_for_dma = [&](void*, size_t) { ++unregistered; };
  auto first = AllocateHost(options);
  auto second = AllocateHost(options);
  ASSERT_TRUE(first.ok() && second.ok());
  void* first_data = first->data();
  void* second_data = second->data();
  {
    HostAllocation a = std::move(first).value();
    EXPECT_EQ(a.data(), first_data);
    HostAllocation b = std::move(a);  // move construction
    EXPECT_TRUE(a.empty());           // NOLINT(bugprone-use-after-move): checks the moved-from
    EXPECT_EQ(b.data(), first_data);
    HostAllocation c = std::move(second).value();
    c = std::move(b);  // move assignment frees c's old mapping
    EXPECT_EQ(unregistered, 1);
    EXPECT_FALSE(IsMapped(second_data));
    EXPECT_TRUE(IsMapped(first_data));
    EXPECT_EQ(c.data(), first_data);
    EXPECT_EQ(c.info().bytes, 2 * kMiB);
  }
  EXPECT_EQ(unregistered, 2);
  EXPECT_FALSE(IsMapped(first_data));
}

TEST(HostMemoryTest, ViewIsANonOwningHostTensor) {
  HostAllocOptions options;
  options.bytes = 8 * kMiB;
  auto alloc = AllocateHost(options);
  ASSERT_TRUE(alloc.ok()) << alloc.status().ToString();
  auto view = alloc->View(DType::kF32, {1024, 2048});
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_EQ(view->data, alloc->data());
  EXPECT_EQ(view->owner, nullptr);
  EXPECT_EQ(view->device, Device::kCpu);
  view->ptr<float>()[1024 * 2048 - 1] = 1.5f;
  EXPECT_EQ(static_cast<float*>(alloc->data())[1024 * 2048 - 1], 1.5f);
  auto too_big = alloc->View(DType::kF32, {1024, 2049});
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), StatusCode::kOutOfRange);
  EXPECT_FALSE(alloc->View(DType::kF32, {-1}).ok());
  EXPECT_FALSE(HostAllocation().View(DType::kF32, {1}).ok());
}

}  // namespace
}  // namespace engram
