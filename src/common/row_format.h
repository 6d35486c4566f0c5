// RowFormat: how one Engram table row is stored, moved and cached. F32/F16/BF16 rows are `dim`
// elements; FP8 rows are packed (fp8.h): dim E4M3 codes then dim / 32 E8M0 scales. Every tier,
// staging buffer, row cache and device arena carries rows in this stored form (a tensor
// [rows, cols()] of storage_dtype()); they are widened to F32 only where the model reads them
// (Backend::GatherRows).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "common/fp8.h"

namespace engram {

struct RowFormat {
  DType dtype = DType::kBF16;  // F32, F16, BF16 or F8_E4M3
  int64_t dim = 0;             // values per row (Dh)

  bool fp8() const { return dtype == DType::kF8E4M3; }
  // Bytes of one stored row, scales included.
  size_t bytes() const {
    return fp8() ? Fp8RowBytes(dim) : static_cast<size_t>(dim) * DTypeSize(dtype);
  }
  // The element type and row length of tensors holding stored rows: U8 [*, bytes()] for FP8.
  DType storage_dtype() const { return fp8() ? DType::kU8 : dtype; }
  int64_t cols() const { return fp8() ? static_cast<int64_t>(bytes()) : dim; }
};

}  // namespace engram
