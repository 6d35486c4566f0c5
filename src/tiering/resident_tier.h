// ResidentTier: every Engram table held whole by the backend (the fastest tier). Rows are
// gathered straight from it. The host/NVMe tiers and the device hot-row cache build on the
// same Gather contract.
#pragma once

#include <vector>

#include "kernels/backend.h"
#include "tiering/table_source.h"

namespace engram {

class ResidentTier {
 public:
  // tables[i] is Engram layer i's table (host memory), prepared with WeightUse::kEmbedding in
  // its stored row form (FP8 rows packed with their scales; the backend dequantizes them in
  // GatherRows). INVALID_ARGUMENT naming the layer for a table TableSource::Check refuses.
  static Result<ResidentTier> Create(Backend& backend, const std::vector<TableSource>& tables);

  int num_layers() const { return static_cast<int>(tables_.size()); }
  int64_t rows(int layer) const { return tables_[layer].dim(0); }
  // out F32 [T, H * Dh] = the rows named by `rows` (I64 [T, H], absolute, on the device).
  Status Gather(Backend& backend, int layer, const Tensor& rows, Tensor& out) const;

 private:
  std::vector<Tensor> tables_;
};

}  // namespace engram
