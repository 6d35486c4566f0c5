// The CUDA backend's RowChannel and host-memory methods (AllocHostStaging, RegisterHostMemory,
// CreateRowChannel) against byte-for-byte CPU computations. Host C++ through backend.h only;
// every test skips when no CUDA backend can be made (not built, or no GPU visible).
//
// Ordering used throughout: tensors are filled on the backend's compute stream and then
// Synchronize()d before the channel (its own copy stream) touches them; channel results are read
// after WaitMark (copy side) or after EndWait on the compute stream (CopyToHost runs there).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/dtype.h"
#include "kernels/backend.h"

namespace engram {
namespace {

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const ::engram::Status _st = (expr);                      \
    ASSERT_TRUE(_st.ok()) << #expr << ": " << _st.ToString(); \
  } while (0)

constexpr int kMarks = 4;

bool IsInvalid(const Status& st) { return st.code() == StatusCode::kInvalidArgument; }

size_t RoundUpToPage(size_t n) {
  const size_t page = 4096;
  return (n + page - 1) / page * page;
}

// An anonymous private mapping (page-aligned), unmapped on destruction.
class Mapping {
 public:
  Mapping(size_t bytes, int prot) : bytes_(RoundUpToPage(bytes)) {
    void* p = mmap(nullptr, bytes_, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : p;
  }
  ~Mapping() {
    if (data_ != nullptr) munmap(data_, bytes_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_;
  void* data_ = nullptr;
};

struct RowCase {
  DType dtype;
  int64_t dh;
  const char* what;
};
// 128-byte rows (16-byte vectors), 12 (4-byte), 10 (2-byte), 24 (8-byte); packed FP8 rows
// (U8, common/fp8.h) of 264 bytes (Dh = 256: 8-byte vectors), 33 (Dh = 32: bytes) and 132
// (Dh = 128: 4-byte vectors), copied as stored.
const RowCase kRowCases[] = {
    {DType::kBF16, 64, "BF16 Dh=64 (128 B)"},        {DType::kF32, 3, "F32 Dh=3 (12 B)"},
    {DType::kBF16, 5, "BF16 Dh=5 (10 B)"},           {DType::kF32, 6, "F32 Dh=6 (24 B)"},
    {DType::kU8, 264, "U8 FP8 rows Dh=256 (264 B)"}, {DType::kU8, 33, "U8 FP8 rows Dh=32 (33 B)"},
    {DType::kU8, 132, "U8 FP8 rows Dh=128 (132 B)"}};

class CudaChannel : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = CreateBackend({.kind = "cuda"});
    if (!r.ok()) GTEST_SKIP() << "CUDA backend unavailable: " << r.status().ToString();
    be_ = std::move(r).value();
    auto c = be_->CreateRowChannel(kMarks);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ch_ = std::move(c).value();
    rng_.seed(static_cast<uint32_t>(
        std::hash<std::string>{}(::testing::UnitTest::GetInstance()->current_test_info()->name())));
  }

  std::vector<uint8_t> RandomBytes(size_t n) {
    std::uniform_int_distribution<int> d(0, 255);
    std::vector<uint8_t> v(n);
    for (uint8_t& b : v) b = static_cast<uint8_t>(d(rng_));
    return v;
  }

  // A device tensor holding `bytes`, complete on the device when this returns.
  Tensor OnDevice(const void* bytes, DType dtype, std::vector<int64_t> shape) {
    auto r = be_->Alloc(dtype, std::move(shape));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    Tensor t = std::move(r).value();
    Status st = be_->CopyFromHost(bytes, t);
    EXPECT_TRUE(st.ok()) << st.ToString();
    st = be_->Synchronize();
    EXPECT_TRUE(st.ok()) << st.ToString();
    return t;
  }
  Tensor DeviceRows(const std::vector<int64_t>& ids) {
    return OnDevice(ids.data(), DType::kI64, {static_cast<int64_t>(ids.size())});
  }
  // A device tensor with every byte `fill`.
  Tensor Filled(uint8_t fill, DType dtype, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<uint8_t> bytes(static_cast<size_t>(n) * DTypeSize(dtype), fill);
    return OnDevice(bytes.data(), dtype, std::move(shape));
  }
  std::vector<uint8_t> Bytes(const Tensor& t) {
    std::vector<uint8_t> v(t.nbytes());
    const Status st = be_->CopyToHost(t, v.data());
    EXPECT_TRUE(st.ok()) << st.ToString();
    return v;
  }

  // Gathers `ids` from `table` (device or host) and compares dst with the rows of `host` (the
  // table's bytes) byte for byte; dst's rows past the ids stay untouched.
  void GatherAndCheck(const Tensor& table, const uint8_t* host, const std::vector<int64_t>& ids,
                      const char* what) {
    const int64_t dh = table.dim(1);
    const size_t rb = static_cast<size_t>(dh) * DTypeSize(table.dtype);
    const int64_t n = static_cast<int64_t>(ids.size());
    Tensor rows = DeviceRows(ids);
    Tensor dst = Filled(0xAB, table.dtype, {n + 3, dh});
    ASSERT_OK(ch_->Gather(table, rows, dst));
    ASSERT_OK(ch_->Mark(1));
    ASSERT_OK(ch_->WaitMark(1));
    const std::vector<uint8_t> got = Bytes(dst);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::memcmp(got.data() + i * rb, host + ids[i] * rb, rb), 0)
          << what << ": row " << i << " (table row " << ids[i] << ")";
    }
    for (size_t b = n * rb; b < got.size(); ++b) {
      ASSERT_EQ(got[b], 0xAB) << what << ": byte " << b << " past the gathered rows changed";
    }
  }

  std::vector<int64_t> RandomIds(int64_t n, int64_t rows) {
    std::uniform_int_distribution<int64_t> pick(0, rows - 1);
    std::vector<int64_t> ids(static_cast<size_t>(n));
    for (int64_t& i : ids) i = pick(rng_);
    ids[0] = rows - 1;  // the last row, whose end is the table's end
    return ids;
  }

  std::unique_ptr<Backend> be_;
  std::unique_ptr<RowChannel> ch_;  // destroyed before be_
  std::mt19937 rng_;
};

TEST_F(CudaChannel, AllocHostStagingIsAUsableZeroedCpuTensor) {
  auto r = be_->AllocHostStaging(DType::kF32, {33, 7});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Tensor t = std::move(r).value();
  EXPECT_EQ(t.device, Device::kCpu);
  EXPECT_EQ(t.dtype, DType::kF32);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{33, 7}));
  ASSERT_NE(t.data, nullptr);
  ASSERT_NE(t.owner, nullptr);
  for (int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t.ptr<float>()[i], 0.f);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr<float>()[i] = static_cast<float>(i) * 0.5f;
  for (int64_t i = 0; i < t.numel(); ++i)
    ASSERT_EQ(t.ptr<float>()[i], static_cast<float>(i) * 0.5f);

  auto empty = be_->AllocHostStaging(DType::kBF16, {0, 64});
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_NE(empty->data, nullptr);
  EXPECT_EQ(empty->nbytes(), 0u);
  EXPECT_TRUE(IsInvalid(be_->AllocHostStaging(DType::kF32, {-1, 4}).status()));

  // Pinned and mapped: the copy path reads it in place (zero-copy), like a registered table.
  std::vector<uint8_t> host(t.nbytes());
  std::memcpy(host.data(), t.data, host.size());
  GatherAndCheck(t, host.data(), RandomIds(20, 33), "Gather from AllocHostStaging");
}

TEST_F(CudaChannel, UploadAndWaitMarkFromAnotherThread) {
  const int64_t n = 300, dh = 64;
  auto r = be_->AllocHostStaging(DType::kBF16, {n, dh});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Tensor staging = std::move(r).value();
  const std::vector<uint8_t> bytes = RandomBytes(staging.nbytes());
  std::memcpy(staging.data, bytes.data(), bytes.size());
  Tensor dst = Filled(0, DType::kBF16, {n, dh});

  // The copy side runs on its own thread, as the copy engine's does (the channel must make the
  // device current there itself).
  Status up, mark, wait;
  std::thread copier([&] {
    up = ch_->Upload(staging, dst);
    mark = ch_->Mark(0);
    wait = ch_->WaitMark(0);
  });
  copier.join();
  ASSERT_OK(up);
  ASSERT_OK(mark);
  ASSERT_OK(wait);
  EXPECT_EQ(Bytes(dst), bytes);

  // A pageable source works too (CUDA stages it); an empty upload is a no-op.
  const std::vector<uint8_t> more = RandomBytes(staging.nbytes());
  std::vector<uint8_t> pageable = more;
  ASSERT_OK(ch_->Upload(HostView(pageable.data(), DType::kBF16, {n, dh}), dst));
  ASSERT_OK(ch_->Mark(0));
  ASSERT_OK(ch_->WaitMark(0));
  EXPECT_EQ(Bytes(dst), more);
  Tensor none = Filled(0, DType::kF32, {0, 4});
  ASSERT_OK(ch_->Upload(HostView(nullptr, DType::kF32, {0, 4}), none));
}

TEST_F(CudaChannel, GatherFromDeviceTableMatchesCpu) {
  for (const RowCase& c : kRowCases) {
    const int64_t R = 97;
    const std::vector<uint8_t> table =
        RandomBytes(static_cast<size_t>(R * c.dh) * DTypeSize(c.dtype));
    Tensor dt = OnDevice(table.data(), c.dtype, {R, c.dh});
    GatherAndCheck(dt, table.data(), RandomIds(41, R), c.what);
    // A view starting inside the table (a row offset changes the pointer's alignment).
    const size_t rb = static_cast<size_t>(c.dh) * DTypeSize(c.dtype);
    GatherAndCheck(dt.Rows(1, R), table.data() + rb, RandomIds(17, R - 1), c.what);
  }
}

TEST_F(CudaChannel, GatherFromRegisteredHostTableIsZeroCopy) {
  for (const RowCase& c : kRowCases) {
    const int64_t R = 1000;
    const size_t bytes = static_cast<size_t>(R * c.dh) * DTypeSize(c.dtype);
    Mapping map(bytes, PROT_READ | PROT_WRITE);
    ASSERT_NE(map.data(), nullptr);
    const std::vector<uint8_t> table = RandomBytes(bytes);
    std::memcpy(map.data(), table.data(), bytes);
    ASSERT_OK(be_->RegisterHostMemory(map.data(), map.bytes()));
    Tensor host = HostView(map.data(), c.dtype, {R, c.dh});
    GatherAndCheck(host, table.data(), RandomIds(300, R), c.what);
    const size_t rb = static_cast<size_t>(c.dh) * DTypeSize(c.dtype);
    GatherAndCheck(host.Rows(3, R), table.data() + 3 * rb, RandomIds(50, R - 3), c.what);
    be_->UnregisterHostMemory(map.data(), map.bytes());  // after WaitMark: nothing reads it
  }
}

TEST_F(CudaChannel, GatherOutOfRangeRowIsZeroAndReportedByTheBackend) {
  const int64_t R = 10, dh = 6;
  const std::vector<uint8_t> table = RandomBytes(static_cast<size_t>(R * dh) * 4);
  Tensor dt = OnDevice(table.data(), DType::kF32, {R, dh});
  const std::vector<int64_t> ids = {2, R, 7, -1, 0};
  Tensor rows = DeviceRows(ids);
  Tensor dst = Filled(0xAB, DType::kF32, {5, dh});
  ASSERT_OK(ch_->Gather(dt, rows, dst));
  ASSERT_OK(ch_->Mark(2));
  ASSERT_OK(ch_->WaitMark(2));
  EXPECT_EQ(be_->Synchronize().code(), StatusCode::kOutOfRange);
  ASSERT_OK(be_->Synchronize());  // reported once
  const std::vector<uint8_t> got = Bytes(dst);
  const size_t rb = dh * 4;
  for (size_t i = 0; i < ids.size(); ++i) {
    const bool bad = ids[i] < 0 || ids[i] >= R;
    for (size_t b = 0; b < rb; ++b) {
      const uint8_t want = bad ? 0 : table[ids[i] * rb + b];
      ASSERT_EQ(got[i * rb + b], want) << "row " << i << " byte " << b;
    }
  }
}

TEST_F(CudaChannel, ScatterMatchesCpu) {
  for (const RowCase& c : kRowCases) {
    const int64_t S = 50, n = 19;
    const size_t rb = static_cast<size_t>(c.dh) * DTypeSize(c.dtype);
    const std::vector<uint8_t> src = RandomBytes((n + 2) * rb);  // 2 more rows than slots
    std::vector<int64_t> slots(S);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng_);
    slots.resize(n);                                                                    // distinct
    if (std::find(slots.begin(), slots.end(), S - 1) == slots.end()) slots[1] = S - 1;  // last
    std::vector<uint8_t> want(S * rb, 0xCD);
    for (int64_t i = 0; i < n; ++i) std::memcpy(&want[slots[i] * rb], &src[i * rb], rb);

    Tensor dsrc = OnDevice(src.data(), c.dtype, {n + 2, c.dh});  // the last 2 are not read
    Tensor dslots = DeviceRows(slots);
    Tensor dst = Filled(0xCD, c.dtype, {S, c.dh});
    ASSERT_OK(ch_->Scatter(dsrc, dslots, dst));
    ASSERT_OK(ch_->Mark(3));
    ASSERT_OK(ch_->WaitMark(3));
    EXPECT_EQ(Bytes(dst), want) << c.what;
  }
}

TEST_F(CudaChannel, EndWaitOrdersComputeAfterTheMarkAndTimesTheStall) {
  // 64 MiB take milliseconds over PCIe: a compute-stream read issued right after EndWait sees
  // the whole upload only if compute really waited for the mark.
  const int64_t n = int64_t{16} << 20;
  auto r = be_->AllocHostStaging(DType::kF32, {n});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Tensor staging = std::move(r).value();
  auto z = be_->AllocZeros(DType::kF32, {n});
  ASSERT_TRUE(z.ok()) << z.status().ToString();
  Tensor dst = std::move(z).value();
  ASSERT_OK(be_->Synchronize());

  // A mark is reused once its step ended; each round uploads other values.
  const auto value = [](int64_t i, int round) {
    return static_cast<float>((i + 7 * round) % 1000003);
  };
  for (int round = 0; round < 2; ++round) {
    for (int64_t i = 0; i < n; ++i) staging.ptr<float>()[i] = value(i, round);  // after WaitMark
    ASSERT_OK(ch_->Upload(staging, dst));
    ASSERT_OK(ch_->Mark(1));
    ASSERT_OK(ch_->BeginWait(1));
    ASSERT_OK(ch_->EndWait(1));
    std::vector<float> got(static_cast<size_t>(n));
    ASSERT_OK(be_->CopyToHost(dst, got.data()));  // compute stream, no WaitMark
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i], value(i, round)) << "round " << round << " element " << i;
    }
    auto stall = ch_->StallSeconds(1);
    ASSERT_TRUE(stall.ok()) << stall.status().ToString();
    EXPECT_GE(*stall, 0.0);
    EXPECT_LT(*stall, 10.0);
    std::printf("[  info    ] stall waiting for a 64 MiB upload: %.3f ms\n", *stall * 1e3);
    ASSERT_OK(ch_->WaitMark(1));
  }
  // A mark that was never waited on stalled for nothing.
  auto none = ch_->StallSeconds(3);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_EQ(*none, 0.0);
}

TEST_F(CudaChannel, FenceComputeOrdersCopiesAfterComputeAndHostWaitBeginBlocks) {
  // Compute writes 64 MiB (a pageable CopyFromHost queues on the compute stream); after
  // FenceCompute, a copy-stream Gather of that buffer must see the compute stream's values.
  const int64_t rows = int64_t{1} << 20, dh = 16;  // F32 rows of 64 B
  std::vector<float> host(static_cast<size_t>(rows * dh));
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i % 9973);
  auto a = be_->Alloc(DType::kF32, {rows, dh});
  ASSERT_TRUE(a.ok());
  Tensor table = std::move(a).value();
  ASSERT_OK(be_->CopyFromHost(host.data(), table));
  ASSERT_OK(ch_->FenceCompute());
  const std::vector<int64_t> ids = {rows - 1, 0, 12345};
  Tensor dev_ids = OnDevice(ids.data(), DType::kI64, {3});
  auto d = be_->AllocZeros(DType::kF32, {3, dh});
  ASSERT_TRUE(d.ok());
  Tensor dst = std::move(d).value();
  ASSERT_OK(be_->Synchronize());  // the zero fill (compute) before the gather (copy)
  ASSERT_OK(ch_->FenceCompute());
  ASSERT_OK(ch_->Gather(table, dev_ids, dst));
  ASSERT_OK(ch_->Mark(0));
  ASSERT_OK(ch_->WaitMark(0));
  std::vector<float> got(3 * dh);
  ASSERT_OK(be_->CopyToHost(dst, got.data()));
  for (int r = 0; r < 3; ++r) {
    for (int64_t c = 0; c < dh; ++c) {
      ASSERT_EQ(got[r * dh + c], host[static_cast<size_t>(ids[r] * dh + c)]) << r << "," << c;
    }
  }
  // HostWaitBegin returns once compute has passed BeginWait's point.
  ASSERT_OK(ch_->BeginWait(2));
  ASSERT_OK(ch_->HostWaitBegin(2));
  ASSERT_OK(ch_->EndWait(2));
  EXPECT_TRUE(ch_->HostWaitBegin(3).ok());  // no BeginWait: nothing to wait for
  EXPECT_EQ(ch_->HostWaitBegin(kMarks).code(), StatusCode::kInvalidArgument);
}

TEST_F(CudaChannel, RegisterAndUnregisterMmapRegion) {
  Mapping map(size_t{2} << 20, PROT_READ | PROT_WRITE);
  ASSERT_NE(map.data(), nullptr);
  std::memset(map.data(), 1, map.bytes());
  ASSERT_OK(be_->RegisterHostMemory(map.data(), map.bytes()));
  // Registering the same range again is refused by name; the first registration stays.
  const Status again = be_->RegisterHostMemory(map.data(), map.bytes());
  EXPECT_EQ(again.code(), StatusCode::kUnavailable) << again.ToString();
  std::printf("[  info    ] registering twice: %s\n", again.ToString().c_str());
  be_->UnregisterHostMemory(map.data(), map.bytes());
  // Registering it after unregistering works again.
  ASSERT_OK(be_->RegisterHostMemory(map.data(), map.bytes()));
  be_->UnregisterHostMemory(map.data(), map.bytes());

  EXPECT_TRUE(IsInvalid(be_->RegisterHostMemory(nullptr, 4096)));
  EXPECT_TRUE(IsInvalid(be_->RegisterHostMemory(map.data(), 0)));

  // A read-only mapping (like a PROT_READ mmap of a table file): registered read-only where
  // the device supports it, else refused by name.
  Mapping ro(size_t{1} << 20, PROT_READ);
  ASSERT_NE(ro.data(), nullptr);
  const Status st = be_->RegisterHostMemory(ro.data(), ro.bytes());
  std::printf("[  info    ] registering a read-only mapping: %s\n", st.ToString().c_str());
  if (st.ok()) {
    be_->UnregisterHostMemory(ro.data(), ro.bytes());
  } else {
    EXPECT_TRUE(st.code() == StatusCode::kUnavailable ||
                st.code() == StatusCode::kResourceExhausted)
        << st.ToString();
  }
}

TEST_F(CudaChannel, BadOperandsAreInvalidArgument) {
  const int64_t R = 8, dh = 4;
  std::vector<uint8_t> table_bytes = RandomBytes(R * dh * 4);
  Tensor table = OnDevice(table_bytes.data(), DType::kF32, {R, dh});
  Tensor rows = DeviceRows({1, 2, 3});
  Tensor dst = Filled(0, DType::kF32, {3, dh});
  Tensor host_dst = HostTensor(DType::kF32, {3, dh});
  Tensor host_rows = HostTensor(DType::kI64, {3});
  std::vector<int32_t> ids32 = {1, 2, 3};
  Tensor rows32 = OnDevice(ids32.data(), DType::kI32, {3});

  // Upload: src host, dst device, equal bytes.
  EXPECT_TRUE(IsInvalid(ch_->Upload(table, dst)));          // src on the device
  EXPECT_TRUE(IsInvalid(ch_->Upload(host_dst, host_dst)));  // dst on the host
  Tensor host_src = HostTensor(DType::kF32, {2, dh});
  EXPECT_TRUE(IsInvalid(ch_->Upload(host_src, dst)));  // 32 vs 48 bytes

  // Gather.
  EXPECT_TRUE(IsInvalid(ch_->Gather(table, rows32, dst)));     // rows not I64
  EXPECT_TRUE(IsInvalid(ch_->Gather(table, host_rows, dst)));  // rows on the host
  EXPECT_TRUE(IsInvalid(ch_->Gather(table, rows, host_dst)));  // dst on the host
  Tensor short_dst = Filled(0, DType::kF32, {2, dh});
  EXPECT_TRUE(IsInvalid(ch_->Gather(table, rows, short_dst)));  // 2 rows for 3 ids
  Tensor wide_dst = Filled(0, DType::kF32, {3, dh + 1});
  EXPECT_TRUE(IsInvalid(ch_->Gather(table, rows, wide_dst)));  // Dh differs
  Tensor bf_dst = Filled(0, DType::kBF16, {3, dh});
  EXPECT_TRUE(IsInvalid(ch_->Gather(table, rows, bf_dst)));                  // dtype differs
  EXPECT_TRUE(IsInvalid(ch_->Gather(table.Reshaped({R * dh}), rows, dst)));  // rank 1 table
  EXPECT_TRUE(IsInvalid(ch_->Gather(HostView(nullptr, DType::kF32, {R, dh}), rows, dst)));
  // Pageable host memory: read in place where the GPU can (HMM/ATS), else refused by name.
  Tensor pageable = HostTensor(DType::kF32, {R, dh});
  std::memcpy(pageable.data, table_bytes.data(), table_bytes.size());
  const Status pg = ch_->Gather(pageable, rows, dst);
  if (pg.ok()) {
    ASSERT_OK(ch_->Mark(0));
    ASSERT_OK(ch_->WaitMark(0));
  } else {
    EXPECT_TRUE(IsInvalid(pg)) << pg.ToString();
    std::printf("[  info    ] pageable host table refused: %s\n", pg.ToString().c_str());
  }

  // Scatter.
  Tensor slots = DeviceRows({0, 5, 7});
  EXPECT_TRUE(IsInvalid(ch_->Scatter(dst, slots, wide_dst)));     // Dh differs
  EXPECT_TRUE(IsInvalid(ch_->Scatter(short_dst, slots, table)));  // 2 src rows for 3 slots
  EXPECT_TRUE(IsInvalid(ch_->Scatter(host_dst, slots, table)));   // src on the host
  EXPECT_TRUE(IsInvalid(ch_->Scatter(dst, rows32, table)));       // slots not I64
  EXPECT_TRUE(IsInvalid(ch_->Scatter(dst, slots, host_dst)));     // dst on the host

  // Marks outside [0, kMarks).
  for (int m : {-1, kMarks}) {
    EXPECT_TRUE(IsInvalid(ch_->Mark(m))) << m;
    EXPECT_TRUE(IsInvalid(ch_->WaitMark(m))) << m;
    EXPECT_TRUE(IsInvalid(ch_->BeginWait(m))) << m;
    EXPECT_TRUE(IsInvalid(ch_->EndWait(m))) << m;
    EXPECT_TRUE(IsInvalid(ch_->StallSeconds(m).status())) << m;
  }
  EXPECT_TRUE(IsInvalid(be_->CreateRowChannel(0).status()));
  EXPECT_TRUE(IsInvalid(be_->CreateRowChannel(-3).status()));

  // Nothing above left an error behind.
  ASSERT_OK(ch_->Mark(0));
  ASSERT_OK(ch_->WaitMark(0));
  ASSERT_OK(be_->Synchronize());
}

}  // namespace
}  // namespace engram
