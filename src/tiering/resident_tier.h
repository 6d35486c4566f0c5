// ResidentTier: every Engram table held whole by the backend (the fastest tier). Rows are
// gathered straight from it. The host/NVMe tiers and the device hot-row cache build on the
// same Gather contract.
#pragma once

#include <vector>

#include "kernels/backend.h"

namespace engram {

class ResidentTier {
 public:
  // tables[i] is Engram layer i's table (host memory); prepared with WeightUse::kEmbedding.
  static Result<ResidentTier> Create(Backend& backend, const std::vector<Tensor>& host_tables);

  int num_layers() const { return static_cast<int>(tables_.size()); }
  int64_t rows(int layer) const { return tables_[layer].dim(0); }
  // out F32 [T, H * Dh] = the rows named by `rows` (I64 [T, H], absolute, on the device).
  Status Gather(Backend& backend, int layer, const Tensor& rows, Tensor& out) const;

 private:
  std::vector<Tensor> tables_;
};

}  // namespace engram
