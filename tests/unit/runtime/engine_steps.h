// Test helper: the logits of every position of one sequence, fed to an Engine in chunks.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "runtime/engine.h"

namespace engram::testing {

// Adds a sequence, steps `ids` through it `chunk` tokens at a time (all logits), removes it.
inline std::vector<float> ChunkedLogits(Engine& e, const std::vector<int32_t>& ids, size_t chunk) {
  auto seq = e.AddSequence();
  EXPECT_TRUE(seq.ok());
  std::vector<float> all;
  if (!seq.ok()) return all;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    StepChunk ch{*seq, std::span<const int32_t>(ids.data() + i, std::min(chunk, ids.size() - i))};
    auto out = e.Step({&ch, 1}, true);
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    if (!out.ok()) break;
    all.insert(all.end(), out->begin(), out->end());
  }
  e.RemoveSequence(*seq);
  return all;
}

}  // namespace engram::testing
