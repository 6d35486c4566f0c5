#include "kernels/batch_layout.h"

#include <algorithm>

namespace engram {

int32_t BatchLayout::max_context_len() const {
  int32_t m = 0;
  for (int32_t c : context_lens) m = std::max(m, c);
  return m;
}

Status BatchLayout::Validate() const {
  const size_t T = token_ids.size();
  const size_t S = context_lens.size();
  if (positions.size() != T || seq_of_token.size() != T || slot_mapping.size() != T) {
    return InvalidArgument(
        "BatchLayout: per-token arrays differ in length ({} ids, {} positions, "
        "{} seq_of_token, {} slot_mapping)",
        T, positions.size(), seq_of_token.size(), slot_mapping.size());
  }
  if (seq_token_start.size() != S + 1 || state_slots.size() != S ||
      block_tables.size() != S * static_cast<size_t>(max_blocks_per_seq)) {
    return InvalidArgument("BatchLayout: per-sequence arrays do not match {} sequences", S);
  }
  if (block_size <= 0) return InvalidArgument("BatchLayout: block_size {} <= 0", block_size);
  if (seq_token_start.front() != 0 || static_cast<size_t>(seq_token_start.back()) != T) {
    return InvalidArgument("BatchLayout: seq_token_start must span [0, {}]", T);
  }
  for (size_t s = 0; s < S; ++s) {
    const int32_t b = seq_token_start[s], e = seq_token_start[s + 1];
    if (e <= b) return InvalidArgument("BatchLayout: sequence {} has no tokens", s);
    for (int32_t t = b; t < e; ++t) {
      if (seq_of_token[t] != static_cast<int32_t>(s)) {
        return InvalidArgument("BatchLayout: seq_of_token[{}] = {} but token lies in sequence {}",
                               t, seq_of_token[t], s);
      }
      if (t > b && positions[t] != positions[t - 1] + 1) {
        return InvalidArgument("BatchLayout: positions of sequence {} not consecutive at token {}",
                               s, t);
      }
      const int32_t blk = positions[t] / block_size;
      if (positions[t] < 0 || blk >= max_blocks_per_seq) {
        return OutOfRange("BatchLayout: position {} of token {} beyond the block table",
                          positions[t], t);
      }
      const int32_t want =
          block_tables[s * max_blocks_per_seq + blk] * block_size + positions[t] % block_size;
      if (slot_mapping[t] != want) {
        return InvalidArgument("BatchLayout: slot_mapping[{}] = {}, block table says {}", t,
                               slot_mapping[t], want);
      }
    }
    if (context_lens[s] != positions[e - 1] + 1) {
      return InvalidArgument("BatchLayout: context_lens[{}] = {}, expected {}", s, context_lens[s],
                             positions[e - 1] + 1);
    }
  }
  for (int32_t r : logit_rows) {
    if (r < 0 || static_cast<size_t>(r) >= T) {
      return OutOfRange("BatchLayout: logit row {} outside [0, {})", r, T);
    }
  }
  return Status::Ok();
}

}  // namespace engram
