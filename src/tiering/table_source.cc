#include "tiering/table_source.h"

#include <cstring>

#include <fmt/ranges.h>

namespace engram {

Status CheckTableShapes(const std::string& weight_name, DType weight_dtype,
                        const std::vector<int64_t>& weight_shape, const std::string& scale_name,
                        const std::optional<std::pair<DType, std::vector<int64_t>>>& scale) {
  if (weight_shape.size() != 2 || weight_shape[0] <= 0 || weight_shape[1] <= 0) {
    return InvalidArgument("table {} has shape {}, expected [rows > 0, Dh > 0]", weight_name,
                           weight_shape);
  }
  const int64_t rows = weight_shape[0], dh = weight_shape[1];
  switch (weight_dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      if (scale) {
        return InvalidArgument(
            "table {} is {}, but scales {} come with it; scales belong to F8_E4M3 tables only",
            weight_name, DTypeName(weight_dtype), scale_name);
      }
      return Status::Ok();
    case DType::kF8E4M3:
      break;
    default:
      return InvalidArgument("table {} has dtype {}, expected F32, F16, BF16 or F8_E4M3",
                             weight_name, DTypeName(weight_dtype));
  }
  if (dh % kFp8Block != 0) {
    return InvalidArgument("table {} is F8_E4M3 with Dh {}, expected a multiple of {}", weight_name,
                           dh, kFp8Block);
  }
  const std::vector<int64_t> want = {rows, dh / kFp8Block};
  if (!scale) {
    return InvalidArgument("table {} is F8_E4M3 but its scales {} (F8_E8M0 {}) are missing",
                           weight_name, scale_name, want);
  }
  if (scale->first != DType::kF8E8M0) {
    return InvalidArgument("scales {} have dtype {}, expected F8_E8M0", scale_name,
                           DTypeName(scale->first));
  }
  if (scale->second != want) {
    return InvalidArgument("scales {} have shape {}, expected {} (one per {} values of {})",
                           scale_name, scale->second, want, kFp8Block, weight_name);
  }
  return Status::Ok();
}

Status TableSource::Check(const std::string& name) const {
  if (weight.device != Device::kCpu || weight.data == nullptr) {
    return InvalidArgument("table {} is not in host memory", name);
  }
  std::optional<std::pair<DType, std::vector<int64_t>>> s;
  if (!scale.empty()) {
    if (scale.device != Device::kCpu) {
      return InvalidArgument("scales of table {} are not in host memory", name);
    }
    s.emplace(scale.dtype, scale.shape);
  }
  return CheckTableShapes(name, weight.dtype, weight.shape, name + " scales", s);
}

void TableSource::CopyRows(int64_t begin, int64_t end, void* dst) const {
  const RowFormat f = format();
  auto* out = static_cast<std::byte*>(dst);
  if (!f.fp8()) {
    const size_t rb = f.bytes();
    std::memcpy(out, static_cast<const std::byte*>(weight.data) + static_cast<size_t>(begin) * rb,
                static_cast<size_t>(end - begin) * rb);
    return;
  }
  const size_t codes = static_cast<size_t>(f.dim), scales = codes / kFp8Block;
  const auto* w = static_cast<const std::byte*>(weight.data);
  const auto* s = static_cast<const std::byte*>(scale.data);
  for (int64_t r = begin; r < end; ++r, out += codes + scales) {
    std::memcpy(out, w + static_cast<size_t>(r) * codes, codes);
    std::memcpy(out + codes, s + static_cast<size_t>(r) * scales, scales);
  }
}

Tensor TableSource::Stored() const {
  const RowFormat f = format();
  if (!f.fp8()) return weight;
  Tensor t = HostTensor(f.storage_dtype(), {rows(), f.cols()});
  CopyRows(0, rows(), t.data);
  return t;
}

}  // namespace engram
