// TableSource / TableFiles: one Engram layer's table as the model files hold it, handed to the
// tiers. The weights are [rows, Dh] (F32, F16, BF16 or F8_E4M3); an FP8 table has its per-row
// E8M0 scales [rows, Dh / 32] in a tensor of their own. Tiers store and move rows in the packed
// form of common/row_format.h (codes then scales, one contiguous row).
//
// Thread safety: plain values; CopyRows may run on several threads at once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/row_format.h"
#include "common/status.h"
#include "kernels/tensor.h"
#include "model/safetensors.h"

namespace engram {

// A table in host memory (a view of a mapped file, or a synthetic tensor).
struct TableSource {
  Tensor weight;  // [rows, Dh]
  Tensor scale;   // F8_E8M0 [rows, Dh / 32] with F8_E4M3 weights; empty otherwise

  TableSource() = default;
  TableSource(Tensor w) : weight(std::move(w)) {}  // NOLINT(google-explicit-constructor)
  TableSource(Tensor w, Tensor s) : weight(std::move(w)), scale(std::move(s)) {}

  int64_t rows() const { return weight.shape.empty() ? 0 : weight.dim(0); }
  RowFormat format() const { return {weight.dtype, weight.shape.size() == 2 ? weight.dim(1) : 0}; }
  // INVALID_ARGUMENT naming `name`: not in host memory, not [rows > 0, Dh > 0], a dtype rows
  // cannot have, FP8 weights without F8_E8M0 scales [rows, Dh / 32] (Dh a multiple of 32), or
  // scales beside weights that are not FP8.
  Status Check(const std::string& name) const;
  // Rows [begin, end) in their stored form (format().bytes() each, FP8 packed) to dst.
  void CopyRows(int64_t begin, int64_t end, void* dst) const;
  // The whole table in its stored form: a view of `weight` when that is already it, else a
  // new host tensor [rows, format().cols()] of format().storage_dtype().
  Tensor Stored() const;
};

// A table read in place from the model files (the NVMe tier).
struct TableFiles {
  TensorInfo weight;
  std::optional<TensorInfo> scale;  // with F8_E4M3 weights

  TableFiles() = default;
  TableFiles(TensorInfo w) : weight(std::move(w)) {}  // NOLINT(google-explicit-constructor)
  TableFiles(TensorInfo w, std::optional<TensorInfo> s)
      : weight(std::move(w)), scale(std::move(s)) {}
  RowFormat format() const {
    return {weight.dtype, weight.shape.size() == 2 ? weight.shape[1] : 0};
  }
};

// The checks of TableSource::Check on dtypes and shapes alone (names from `weight_name` and
// `scale_name`); shared by both kinds of source.
Status CheckTableShapes(const std::string& weight_name, DType weight_dtype,
                        const std::vector<int64_t>& weight_shape, const std::string& scale_name,
                        const std::optional<std::pair<DType, std::vector<int64_t>>>& scale);

}  // namespace engram
