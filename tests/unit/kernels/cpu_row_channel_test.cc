// The CPU backend's row channel (Upload, Gather, Scatter, marks and stall time) and host
// memory registration (mlock).
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <numeric>
#include <thread>

#include "kernels/backend.h"

namespace engram {
namespace {

std::unique_ptr<Backend> Cpu() {
  BackendOptions o;
  o.threads = 1;
  auto b = CreateBackend(o);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return std::move(b).value();
}

Tensor Ids(std::vector<int64_t> v) {
  Tensor t = HostTensor(DType::kI64, {static_cast<int64_t>(v.size())});
  std::memcpy(t.data, v.data(), v.size() * 8);
  return t;
}

TEST(CpuRowChannel, UploadGatherScatterMoveRowBytes) {
  auto b = Cpu();
  auto ch = b->CreateRowChannel(4);
  ASSERT_TRUE(ch.ok()) << ch.status().ToString();
  RowChannel& c = **ch;
  // A BF16 table of 10 rows x 3 elements (6-byte rows: no alignment assumed).
  Tensor table = HostTensor(DType::kBF16, {10, 3});
  auto* tb = table.ptr<uint16_t>();
  for (int i = 0; i < 30; ++i) tb[i] = static_cast<uint16_t>(1000 + i);

  Tensor staged = b->AllocHostStaging(DType::kBF16, {4, 3}).value();
  Tensor dev = b->Alloc(DType::kBF16, {4, 3}).value();
  std::memcpy(staged.data, tb + 3 * 6, 4 * 6);  // rows 6..9
  ASSERT_TRUE(c.Upload(staged, dev).ok());
  EXPECT_EQ(std::memcmp(dev.data, tb + 18, 24), 0);

  Tensor out = b->AllocZeros(DType::kBF16, {5, 3}).value();
  ASSERT_TRUE(c.Gather(table, Ids({7, 0, 7, 9}), out).ok());
  const int want[] = {7, 0, 7, 9};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(std::memcmp(out.ptr<uint16_t>() + 3 * i, tb + 3 * want[i], 6), 0) << i;
  }
  for (int e = 12; e < 15; ++e) EXPECT_EQ(out.ptr<uint16_t>()[e], 0) << "row 4 untouched";

  Tensor dst = b->AllocZeros(DType::kBF16, {6, 3}).value();
  ASSERT_TRUE(c.Scatter(out.Rows(0, 2), Ids({5, 1}), dst).ok());
  EXPECT_EQ(std::memcmp(dst.ptr<uint16_t>() + 15, tb + 21, 6), 0);  // dst[5] = table[7]
  EXPECT_EQ(std::memcmp(dst.ptr<uint16_t>() + 3, tb + 0, 6), 0);    // dst[1] = table[0]
  EXPECT_EQ(dst.ptr<uint16_t>()[0], 0);

  EXPECT_TRUE(c.Mark(3).ok());
  EXPECT_TRUE(c.WaitMark(3).ok());
  EXPECT_TRUE(c.FenceCompute().ok());  // compute is the host: nothing to order
  EXPECT_TRUE(c.HostWaitBegin(3).ok());
  EXPECT_EQ(c.HostWaitBegin(4).code(), StatusCode::kInvalidArgument);
}

TEST(CpuRowChannel, BadOperandsAreInvalidArgument) {
  auto b = Cpu();
  auto c = std::move(b->CreateRowChannel(2)).value();
  Tensor table = HostTensor(DType::kF32, {4, 2});
  Tensor out = HostTensor(DType::kF32, {2, 2});
  Tensor bf = HostTensor(DType::kBF16, {2, 2});
  auto expect = [](const Status& s, const char* what) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
  };
  expect(c->Gather(table, Ids({4}), out), "rows[0] = 4 outside the table [0, 4)");
  expect(c->Gather(table, Ids({0, 1, 2}), out), "dst has 2 rows for 3 row ids");
  expect(c->Gather(table, Ids({0}), bf), "one dtype and Dh");
  expect(c->Gather(table, HostTensor(DType::kI32, {1}), out), "expected I64");
  expect(c->Scatter(out, Ids({0, 4}), table), "slots[1] = 4 outside dst [0, 4)");
  expect(c->Upload(out, table), "src holds 16 bytes");
  expect(c->Mark(2), "mark 2 outside [0, 2)");
  expect(c->BeginWait(-1), "mark -1");
  EXPECT_EQ(b->CreateRowChannel(0).status().code(), StatusCode::kInvalidArgument);
}

TEST(CpuRowChannel, StallIsTheHostTimeBetweenBeginAndEndWait) {
  auto b = Cpu();
  auto c = std::move(b->CreateRowChannel(1)).value();
  ASSERT_TRUE(c->BeginWait(0).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(c->EndWait(0).ok());
  auto s = c->StallSeconds(0);
  ASSERT_TRUE(s.ok());
  EXPECT_GE(*s, 0.019);
  EXPECT_LT(*s, 5.0);
}

TEST(CpuBackend, RegisterHostMemoryLocksPages) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer turns mlock into a no-op (its shadow memory cannot be locked)";
#endif
  auto b = Cpu();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t bytes = 4 * page;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_TRUE(b->RegisterHostMemory(p, bytes).ok());
  unsigned char vec[4] = {};
  ASSERT_EQ(mincore(p, bytes, vec), 0);
  for (unsigned char v : vec) EXPECT_TRUE(v & 1) << "a locked page is resident";
  b->UnregisterHostMemory(p, bytes);
  EXPECT_EQ(b->RegisterHostMemory(nullptr, 0).code(), StatusCode::kInvalidArgument);

  // Over the locked-memory limit: RESOURCE_EXHAUSTED naming the limit (root is exempt).
  if (geteuid() != 0) {
    rlimit old{};
    ASSERT_EQ(getrlimit(RLIMIT_MEMLOCK, &old), 0);
    rlimit tight = old;
    tight.rlim_cur = 0;
    ASSERT_EQ(setrlimit(RLIMIT_MEMLOCK, &tight), 0);
    const Status st = b->RegisterHostMemory(p, bytes);
    ASSERT_EQ(setrlimit(RLIMIT_MEMLOCK, &old), 0);
    EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
    EXPECT_NE(st.message().find("memlock"), std::string::npos) << st.message();
  } else {
    std::fprintf(stderr, "note: running as root; the memlock-limit refusal is not exercised\n");
  }
  munmap(p, bytes);
}

}  // namespace
}  // namespace engram
