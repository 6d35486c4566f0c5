// engram pack quantize's core: BF16 tables re-stored as FP8 rows within E4M3's rounding, every
// other tensor byte-identical, checksums covering the scales, and each refusal.
#include "model/table_quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "../../support/temp_dir.h"
#include "common/fp8.h"
#include "model/model_files.h"
#include "model/synth.h"
#include "model/table_checksum.h"
#include "model/weights.h"

namespace engram {
namespace {

using testutil::TempDir;

std::string WriteModel(const TempDir& dir, const char* preset, DType tables) {
  SynthOptions o;
  o.preset = preset;
  o.table_dtype = tables;
  o.progress = false;
  const std::string path = dir.path() + "/in";
  const Status st = WriteSynthModel(o, path);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return path;
}

TEST(TableQuantize, Bf16TablesBecomeFp8RowsWithinRounding) {
  TempDir dir;
  const std::string in = WriteModel(dir, "tiny-v41", DType::kBF16);
  const std::string out = dir.path() + "/out";
  QuantizeOptions o;
  o.threads = 2;
  o.progress = false;
  auto report = QuantizeModelTables(in, out, o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->tables, 2);

  auto a = OpenModel(in), b = OpenModel(out);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << b.status().ToString();
  const EngramConfig& e = *a->config.engram;
  uint64_t rows_total = 0;
  for (const int l : e.layer_ids) {
    auto src = a->store.Get(EngramTableName(e, l));
    auto codes = b->store.Get(EngramTableName(e, l));
    auto scales = b->store.Get(EngramScaleName(e, l));
    ASSERT_TRUE(src.ok() && codes.ok() && scales.ok());
    EXPECT_EQ(codes->dtype, DType::kF8E4M3);
    EXPECT_EQ(scales->dtype, DType::kF8E8M0);
    const int64_t rows = src->dim(0), dh = src->dim(1);
    ASSERT_EQ(scales->shape, (std::vector<int64_t>{rows, dh / 32}));
    rows_total += static_cast<uint64_t>(rows);
    std::vector<float> x(static_cast<size_t>(dh)), y(static_cast<size_t>(dh));
    for (int64_t r = 0; r < rows; ++r) {
      ConvertToF32(DType::kBF16, src->ptr<uint16_t>() + r * dh, x.data(), x.size());
      DequantFp8Row(codes->ptr<uint8_t>() + r * dh, scales->ptr<uint8_t>() + r * (dh / 32), dh,
                    y.data());
      for (int64_t i = 0; i < dh; ++i) {
        // Half an E4M3 step: 2^-4 of the value (3 mantissa bits), or of the subnormal step.
        const double step = std::ldexp(1.0, scales->ptr<uint8_t>()[r * (dh / 32) + i / 32] - 127);
        const double bound = std::max(std::fabs(x[i]) / 16.0, step * std::ldexp(1.0, -10));
        ASSERT_LE(std::fabs(y[i] - x[i]), bound * 1.0001) << "layer " << l << " row " << r;
      }
    }
  }
  EXPECT_EQ(report->table_bytes_out, rows_total * Fp8RowBytes(32));
  // Every other tensor is unchanged.
  for (const std::string& name : a->store.Names()) {
    if (name.find(".engram.embed.") != std::string::npos) continue;
    auto x = a->store.Get(name), y = b->store.Get(name);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    ASSERT_EQ(x->nbytes(), y->nbytes());
    EXPECT_EQ(std::memcmp(x->data, y->data, x->nbytes()), 0) << name;
  }
  // The new checksums list the tables and their scales, and they verify.
  auto sums = LoadTableChecksums(out + "/" + std::string(kTableChecksumsFile));
  ASSERT_TRUE(sums.ok()) << sums.status().ToString();
  EXPECT_EQ(sums->tensors.size(), 4u);
  EXPECT_TRUE(sums->tensors.count(EngramScaleName(e, 2)));
  EXPECT_TRUE(VerifyTableChecksums(b->store, out, {}).ok());
}

TEST(TableQuantize, RefusesWhatItCannotQuantize) {
  TempDir dir;
  QuantizeOptions o;
  o.progress = false;
  const std::string fp8 = WriteModel(dir, "tiny-v41", DType::kF8E4M3);
  auto again = QuantizeModelTables(fp8, dir.path() + "/x", o);
  EXPECT_EQ(again.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(again.status().message().find("is F8_E4M3, expected F32, F16 or BF16"),
            std::string::npos)
      << again.status().ToString();
  EXPECT_EQ(QuantizeModelTables(fp8, fp8, o).status().code(), StatusCode::kFailedPrecondition);
  TempDir dir2;
  const std::string tiny = WriteModel(dir2, "tiny", DType::kBF16);  // rows of 8 values
  auto ragged = QuantizeModelTables(tiny, dir2.path() + "/x", o);
  EXPECT_EQ(ragged.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ragged.status().message().find("multiple of 32"), std::string::npos)
      << ragged.status().ToString();
}

}  // namespace
}  // namespace engram
