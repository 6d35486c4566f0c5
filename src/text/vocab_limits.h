// The largest vocabulary the text pipeline accepts: token ids are in [0, kMaxVocab). The model
// config (ConfigLimits::kMaxVocab) uses the same bound, so any tokenizer that loads fits a
// model that loads.
#pragma once

#include <cstdint>

namespace engram {

inline constexpr int64_t kMaxVocab = int64_t{1} << 24;

}  // namespace engram
