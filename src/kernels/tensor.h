// Tensor: a typed, shaped view of memory on one device, optionally owning it.
// Model code never dereferences data() of a device tensor; only backend ops do.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace engram {

enum class Device : uint8_t { kCpu, kCuda };

// Layouts a backend may give a prepared weight. Ops accept only the layouts their own
// PrepareWeight produces; kRowMajor is understood by every backend. kInt8Block32: a Linear
// weight quantized to symmetric int8 in blocks of 32 inputs with one F32 scale per block and
// output row (BackendOptions::weights = "int8"), dtype U8, logical shape [N, K]; its bytes are
// the backend's (CPU: src/kernels/cpu/linear_int8.h), not numel() * 1. kFp8Panels: a Linear
// weight of block-scaled E4M3 codes (a checkpoint's quantization_config "fp8"), dtype U8,
// logical shape [N, K], bytes as src/kernels/cpu/linear_fp8.h lays them out.
enum class Layout : uint8_t {
  kRowMajor = 0,
  kBackendPacked = 1,
  kInt8Block32 = 2,
  kFp8Panels = 3,
  kFp8Block128 = 4,  // CUDA: E4M3 codes plus 128 x 128 block scales (kernels/cuda/fp8_linear.h)
  kInt8Rows32 = 5,   // CUDA: int8 codes plus a scale per row and 32 inputs (cuda/int8_linear.h)
};

struct Tensor {
  std::shared_ptr<void> owner;  // keeps `data` alive; null for a non-owning view
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  Layout layout = Layout::kRowMajor;
  std::vector<int64_t> shape;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  bool empty() const { return data == nullptr; }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  // A view of rows [begin, end) of the first dimension (shares ownership).
  Tensor Rows(int64_t begin, int64_t end) const;
  // The same memory with another shape of equal element count.
  Tensor Reshaped(std::vector<int64_t> new_shape) const;
  std::string ShapeString() const;  // "[3, 4]"
};

// A CPU tensor of the given type and shape, zero-initialized, owning its memory
// (64-byte aligned).
Tensor HostTensor(DType dtype, std::vector<int64_t> shape);
// A non-owning CPU view of `data`.
Tensor HostView(void* data, DType dtype, std::vector<int64_t> shape);

}  // namespace engram
