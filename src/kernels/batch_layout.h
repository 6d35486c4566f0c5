// BatchLayout: the per-step description of which tokens of which sequences one forward pass
// computes. Built by the engine on the host for every step (never a global); the backend
// mirrors the arrays it needs onto its device with Backend::UploadLayout.
//
// Invariants (checked by Validate):
//  - tokens of one sequence are contiguous, in increasing position order, and
//    seq_token_start[s] .. seq_token_start[s+1] are sequence s's tokens in this step;
//  - context_lens[s] = position of s's last token in this step + 1;
//  - slot_mapping[t] = block_tables[s][positions[t] / block_size] * block_size
//                      + positions[t] % block_size;
//  - state_slots[s] indexes the per-sequence Engram state rows (conv history).
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/tensor.h"

namespace engram {

struct BatchLayout {
  // Per token (num_tokens entries).
  std::vector<int32_t> token_ids;
  std::vector<int32_t> positions;
  std::vector<int32_t> seq_of_token;
  std::vector<int32_t> slot_mapping;
  // Per sequence in this step (num_seqs entries; seq_token_start has num_seqs + 1).
  std::vector<int32_t> seq_token_start;
  std::vector<int32_t> context_lens;
  std::vector<int32_t> state_slots;
  std::vector<int32_t> block_tables;  // num_seqs x max_blocks_per_seq, row-major
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 16;
  // Token indices whose logits the step returns (e.g. each sequence's last token).
  std::vector<int32_t> logit_rows;

  // Device mirrors of the arrays above (I32 tensors), filled by Backend::UploadLayout.
  // On the CPU backend they are views of the host vectors.
  struct DeviceArrays {
    Tensor token_ids, positions, seq_of_token, slot_mapping, seq_token_start, context_lens,
        state_slots, block_tables, logit_rows;
  } dev;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(context_lens.size()); }
  int32_t max_context_len() const;

  // Checks the invariants above; the error names the array and index that broke one.
  Status Validate() const;
};

}  // namespace engram
