// The CPU FP8 row kernels (fp8_gather.cc) on every instruction set this machine runs, against
// the scalar reference DequantFp8Row: bitwise, over random codes (NaN and subnormal codes
// included) and the extreme scales; and GatherRows on packed FP8 tables, with its shape checks.
#include <gtest/gtest.h>

#include <cstring>

#include "common/fp8.h"
#include "cpu_test_util.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/thread_pool.h"

namespace engram {
namespace {

using cpu_test::Poisoned;
using cpu_test::ToVector;

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// Bitwise equal, except that a NaN of the reference need only be a NaN (sign and payload of
// NaN * NaN depend on operand order, which compilers may swap).
::testing::AssertionResult SameValue(float got, float want) {
  if (std::isnan(want) ? std::isnan(got) : Bits(got) == Bits(want)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << std::hexfloat << got << " (bits " << std::hex << Bits(got)
                                       << ") != " << want << " (bits " << Bits(want) << ")";
}

// R packed rows of dh values: random codes; scales cycle through the extremes and random ones.
std::vector<uint8_t> RandomFp8Table(int64_t rows, int64_t dh, uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t rb = Fp8RowBytes(dh);
  std::vector<uint8_t> t(rows * rb);
  const uint8_t extremes[] = {0, 1, 2, 126, 127, 128, 200, 246, 247, 253, 254, 255};
  int64_t block = 0;
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = t.data() + r * rb;
    for (int64_t i = 0; i < dh; ++i) row[i] = static_cast<uint8_t>(rng());
    // Some rows are all subnormal codes, some hold NaN codes at block edges.
    if (r % 7 == 3) {
      for (int64_t i = 0; i < dh; ++i) row[i] = static_cast<uint8_t>(rng() & 0x87);
    }
    if (r % 5 == 1) {
      row[0] = 0x7f;
      row[dh - 1] = 0xff;
    }
    for (int64_t b = 0; b < dh / kFp8Block; ++b, ++block) {
      row[dh + b] = block % 3 == 0 ? extremes[(block / 3) % std::size(extremes)]
                                   : static_cast<uint8_t>(rng());
    }
  }
  return t;
}

std::vector<float> Reference(const uint8_t* table, int64_t dh, const std::vector<int64_t>& idx) {
  std::vector<float> out(idx.size() * dh);
  const size_t rb = Fp8RowBytes(dh);
  for (size_t i = 0; i < idx.size(); ++i) {
    const uint8_t* row = table + idx[i] * rb;
    DequantFp8Row(row, row + dh, dh, out.data() + i * dh);
  }
  return out;
}

class CpuFp8GatherTest : public ::testing::TestWithParam<CpuIsa> {};

TEST_P(CpuFp8GatherTest, EveryCodeWithEveryScaleMatchesTheReference) {
  // Row b: codes 0..255 in order (8 blocks of 32), every block scaled by e8m0 code b.
  const int64_t dh = 256;
  const size_t rb = Fp8RowBytes(dh);
  std::vector<uint8_t> row(rb);
  for (int c = 0; c < 256; ++c) row[c] = static_cast<uint8_t>(c);
  std::vector<float> got(dh), want(dh);
  for (int s = 0; s < 256; ++s) {
    for (int64_t b = 0; b < dh / kFp8Block; ++b) row[dh + b] = static_cast<uint8_t>(s);
    // Rotate the codes so each code meets each lane position over the scales.
    std::vector<uint8_t> r2(row);
    for (int c = 0; c < 256; ++c) r2[c] = static_cast<uint8_t>(c + s);
    Fp8RowToF32(GetParam(), r2.data(), dh, got.data());
    DequantFp8Row(r2.data(), r2.data() + dh, dh, want.data());
    for (int64_t i = 0; i < dh; ++i) {
      ASSERT_TRUE(SameValue(got[i], want[i])) << "code " << int{r2[i]} << " scale " << s;
    }
  }
}

TEST_P(CpuFp8GatherTest, GatherMatchesTheReferenceOverRandomRows) {
  ThreadPool pool(3);
  for (int64_t dh : {32, 64, 256, 96}) {
    const int64_t R = 301;
    const std::vector<uint8_t> table = RandomFp8Table(R, dh, static_cast<uint32_t>(dh));
    std::mt19937 rng(17);
    for (int64_t n : {1, 5, 64, 2000}) {
      std::vector<int64_t> idx(n);
      for (auto& i : idx) i = static_cast<int64_t>(rng() % R);
      idx[0] = R - 1;
      std::vector<float> got(n * dh, std::numeric_limits<float>::quiet_NaN());
      GatherFp8RowsToF32(GetParam(), pool, table.data(), dh, idx.data(), n, got.data());
      const std::vector<float> want = Reference(table.data(), dh, idx);
      for (int64_t i = 0; i < n * dh; ++i) {
        ASSERT_TRUE(SameValue(got[i], want[i])) << "dh " << dh << " n " << n << " at " << i;
      }
    }
  }
}

TEST_P(CpuFp8GatherTest, ScaleExtremes) {
  // 2^-127 (an F32 subnormal scale): the smallest code gives 2^-136, still exact; 2^127 makes
  // the large codes overflow to inf; 0xff is NaN for every code.
  const int64_t dh = 32;
  std::vector<uint8_t> row(Fp8RowBytes(dh));
  for (int i = 0; i < 32; ++i) row[i] = static_cast<uint8_t>(i == 0 ? 0x01 : 0x70 + i % 15);
  std::vector<float> got(dh);
  row[dh] = 0;
  Fp8RowToF32(GetParam(), row.data(), dh, got.data());
  EXPECT_EQ(got[0], std::ldexp(1.f, -136));
  row[dh] = 254;
  Fp8RowToF32(GetParam(), row.data(), dh, got.data());
  EXPECT_EQ(got[0], std::ldexp(1.f, 118));
  EXPECT_TRUE(std::isinf(got[9]));  // 0x79 = 288 * 2^127
  row[dh] = 255;
  Fp8RowToF32(GetParam(), row.data(), dh, got.data());
  for (float v : got) EXPECT_TRUE(std::isnan(v));
  row[dh] = 127;
  row[5] = 0x80;
  row[6] = 0x7f;
  row[7] = 0xff;
  Fp8RowToF32(GetParam(), row.data(), dh, got.data());
  EXPECT_EQ(Bits(got[5]), Bits(-0.f));
  EXPECT_TRUE(std::isnan(got[6]) && !std::signbit(got[6]));
  EXPECT_TRUE(std::isnan(got[7]) && std::signbit(got[7]));
}

TEST_P(CpuFp8GatherTest, BackendGatherRowsReadsPackedFp8Tables) {
  auto backend = cpu_test::MakeBackend(GetParam());
  const int64_t R = 200, Dh = 128, T = 9, H = 5;
  std::vector<uint8_t> bytes = RandomFp8Table(R, Dh, 4);
  const int64_t rb = static_cast<int64_t>(Fp8RowBytes(Dh));
  Tensor host = HostView(bytes.data(), DType::kU8, {R, rb});
  auto table = backend->PrepareWeight(host, WeightUse::kEmbedding);
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  EXPECT_EQ(table->data, host.data);  // aliased, not copied
  std::mt19937 rng(2);
  std::vector<int64_t> idx(T * H);
  for (auto& i : idx) i = static_cast<int64_t>(rng() % R);
  idx[1] = R - 1;
  Tensor rows = HostView(idx.data(), DType::kI64, {T, H});
  Tensor out = Poisoned(*backend, {T, H * Dh});
  ASSERT_TRUE(backend->GatherRows(*table, rows, out).ok());
  const std::vector<float> got = ToVector(out);
  const std::vector<float> want = Reference(bytes.data(), Dh, idx);
  for (int64_t i = 0; i < T * H * Dh; ++i) ASSERT_TRUE(SameValue(got[i], want[i])) << i;

  auto expect_invalid = [&](const Tensor& t, const Tensor& r, Tensor& o, const char* needle) {
    const Status st = backend->GatherRows(t, r, o);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.message();
  };
  // Row bytes that do not match Dh codes + Dh / 32 scales: names the table and the expectation.
  Tensor short_table = HostView(bytes.data(), DType::kU8, {R, rb - 1});
  expect_invalid(short_table, rows, out, "[rows, 132]");
  Tensor bf16_sized = HostView(bytes.data(), DType::kU8, {R, Dh});
  expect_invalid(bf16_sized, rows, out, "table has shape");
  // out's width not H * Dh for a whole Dh, or Dh not a multiple of 32.
  Tensor ragged = Poisoned(*backend, {T, H * Dh + 1});
  expect_invalid(*table, rows, ragged, "out");
  Tensor narrow = Poisoned(*backend, {T, H * 48});
  std::vector<uint8_t> b48(R * Fp8RowBytes(48));
  Tensor t48 = HostView(b48.data(), DType::kU8, {R, static_cast<int64_t>(Fp8RowBytes(48))});
  expect_invalid(t48, rows, narrow, "multiple of 32");
  Tensor wrong_t = Poisoned(*backend, {T + 1, H * Dh});
  expect_invalid(*table, rows, wrong_t, "out");
  // Rows outside the table, and a 1-D table.
  idx[7] = R;
  expect_invalid(*table, rows, out, "rows[1][2]");
  idx[7] = 0;
  Tensor flat = HostView(bytes.data(), DType::kU8, {R * rb});
  expect_invalid(flat, rows, out, "table");
  // A U8 table is an embedding table only.
  const auto lin = backend->PrepareWeight(host, WeightUse::kLinear);
  EXPECT_EQ(lin.status().code(), StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuFp8GatherTest, ::testing::ValuesIn(cpu_test::IsasToTest()),
                         cpu_test::IsaParamName);

}  // namespace
}  // namespace engram
