// EngramRowSource: how a forward pass receives the Engram rows of its tokens. The engine
// (prefetch) implements it; the model only waits, at the Engram layer, for the rows of that
// layer. Rows are F32 [T, H * Dh] on the backend's device, in the step's token order.
#pragma once

#include "common/status.h"
#include "kernels/tensor.h"

namespace engram {

class EngramRowSource {
 public:
  virtual ~EngramRowSource() = default;
  // Blocks (or orders the device stream) until Engram layer `engram_index`'s rows are ready
  // and returns them. Errors (e.g. an unreadable table row) fail the step.
  virtual Result<Tensor> WaitRows(int engram_index) = 0;
};

}  // namespace engram
