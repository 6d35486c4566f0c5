#include "tiering/resident_tier.h"

#include <string>

namespace engram {

Result<ResidentTier> ResidentTier::Create(Backend& backend,
                                          const std::vector<TableSource>& tables) {
  ResidentTier tier;
  for (size_t i = 0; i < tables.size(); ++i) {
    const std::string name = "of Engram layer index " + std::to_string(i);
    if (Status st = tables[i].Check(name); !st.ok()) return st.WithContext("resident tier");
    ENGRAM_ASSIGN_OR_RETURN(Tensor prepared,
                            backend.PrepareWeight(tables[i].Stored(), WeightUse::kEmbedding));
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
