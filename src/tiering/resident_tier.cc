#include "tiering/resident_tier.h"

namespace engram {

Result<ResidentTier> ResidentTier::Create(Backend& backend,
                                          const std::vector<Tensor>& host_tables) {
  ResidentTier tier;
  for (const Tensor& t : host_tables) {
    ENGRAM_ASSIGN_OR_RETURN(Tensor prepared, backend.PrepareWeight(t, WeightUse::kEmbedding));
    tier.tables_.push_back(std::move(prepared));
  }
  return tier;
}

Status ResidentTier::Gather(Backend& backend, int layer, const Tensor& rows, Tensor& out) const {
  if (layer < 0 || layer >= num_layers()) {
    return OutOfRange("Engram layer index {} outside [0, {})", layer, num_layers());
  }
  return backend.GatherRows(tables_[layer], rows, out);
}

}  // namespace engram
