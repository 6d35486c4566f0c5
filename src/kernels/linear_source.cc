// StackLinearSources and the Backend defaults that use it (backend.h).
#include <cstring>
#include <optional>
#include <vector>

#include "common/dtype.h"
#include "kernels/backend.h"

namespace engram {
namespace {

Status CheckPart(const LinearSource& p, int64_t k) {
  if (p.w.empty() || p.w.shape.size() != 2) {
    return InvalidArgument("{}: Linear weight has shape {}, expected [N, K]", p.name,
                           p.w.ShapeString());
  }
  if (p.w.dim(1) != k) {
    return InvalidArgument("{}: Linear weight {} has K = {}, the other parts {}", p.name,
                           p.w.ShapeString(), p.w.dim(1), k);
  }
  const bool float_type =
      p.w.dtype == DType::kF32 || p.w.dtype == DType::kF16 || p.w.dtype == DType::kBF16;
  if (!p.quantized()) {
    if (float_type) return Status::Ok();
    return InvalidArgument("{}: Linear weight has dtype {} without scales", p.name,
                           DTypeName(p.w.dtype));
  }
  if (p.w.dtype != DType::kF8E4M3 && p.w.dtype != DType::kI8) {
    return InvalidArgument("{}: quantized Linear weight has dtype {}, expected F8_E4M3 or I8",
                           p.name, DTypeName(p.w.dtype));
  }
  if (p.block_n <= 0 || p.block_k <= 0) {
    return InvalidArgument("{}: block size [{}, {}] must be positive", p.name, p.block_n,
                           p.block_k);
  }
  const std::vector<int64_t> want{(p.w.dim(0) + p.block_n - 1) / p.block_n,
                                  (k + p.block_k - 1) / p.block_k};
  if (p.scale_inv.shape != want ||
      (p.scale_inv.dtype != DType::kF32 && p.scale_inv.dtype != DType::kBF16)) {
    return InvalidArgument("{}: scale_inv is {} {}, expected F32 or BF16 [{}, {}]", p.name,
                           DTypeName(p.scale_inv.dtype), p.scale_inv.ShapeString(), want[0],
                           want[1]);
  }
  return Status::Ok();
}

// F32 values to dt (F32, F16 or BF16; BF16 and F16 round to nearest even).
void ConvertFromF32(const float* src, DType dt, void* dst, size_t n) {
  if (dt == DType::kF32) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  auto* d = static_cast<uint16_t*>(dst);
  for (size_t i = 0; i < n; ++i) d[i] = dt == DType::kBF16 ? F32ToBf16(src[i]) : F32ToF16(src[i]);
}

// Row n of a quantized part, dequantized to F32.
void DequantRow(const LinearSource& p, int64_t n, const float* scales, float* out) {
  const int64_t K = p.w.dim(1), kb = p.scale_inv.dim(1);
  const float* s = scales + (n / p.block_n) * kb;
  const uint8_t* q = p.w.ptr<uint8_t>() + n * K;
  for (int64_t k = 0; k < K; ++k) {
    const float v = p.w.dtype == DType::kF8E4M3 ? E4M3ToF32(q[k])
                                                : static_cast<float>(static_cast<int8_t>(q[k]));
    out[k] = v * s[k / p.block_k];
  }
}

}  // namespace

Result<Tensor> StackLinearSources(const std::vector<LinearSource>& parts, DType dequantized) {
  if (parts.empty()) return InvalidArgument("StackLinearSources: no parts");
  if (dequantized != DType::kF32 && dequantized != DType::kBF16) {
    return InvalidArgument("StackLinearSources: dequantized dtype {} (expected F32 or BF16)",
                           DTypeName(dequantized));
  }
  const int64_t K = parts[0].w.shape.size() == 2 ? parts[0].w.dim(1) : -1;
  int64_t rows = 0;
  std::optional<DType> common;
  bool same = true;
  for (const LinearSource& p : parts) {
    ENGRAM_RETURN_IF_ERROR(CheckPart(p, K));
    rows += p.w.dim(0);
    const DType d = p.quantized() ? dequantized : p.w.dtype;
    if (common && *common != d) same = false;
    common = d;
  }
  if (parts.size() == 1 && !parts[0].quantized()) return parts[0].w;
  const DType dt = same ? *common : DType::kF32;
  Tensor out = HostTensor(dt, {rows, K});
  char* dst = out.ptr<char>();
  const size_t row_bytes = static_cast<size_t>(K) * DTypeSize(dt);
  std::vector<float> row(static_cast<size_t>(K));
  for (const LinearSource& p : parts) {
    const int64_t n = p.w.dim(0);
    if (!p.quantized() && p.w.dtype == dt) {
      std::memcpy(dst, p.w.data, p.w.nbytes());
    } else if (!p.quantized()) {
      for (int64_t r = 0; r < n; ++r) {
        ConvertToF32(p.w.dtype, p.w.ptr<char>() + r * K * DTypeSize(p.w.dtype), row.data(),
                     row.size());
        ConvertFromF32(row.data(), dt, dst + r * row_bytes, row.size());
      }
    } else {
      std::vector<float> scales(static_cast<size_t>(p.scale_inv.numel()));
      ConvertToF32(p.scale_inv.dtype, p.scale_inv.data, scales.data(), scales.size());
      for (int64_t r = 0; r < n; ++r) {
        DequantRow(p, r, scales.data(), row.data());
        ConvertFromF32(row.data(), dt, dst + r * row_bytes, row.size());
      }
    }
    dst += n * static_cast<int64_t>(row_bytes);
  }
  return out;
}

Result<Tensor> Backend::PrepareLinear(const std::vector<LinearSource>& parts) {
  ENGRAM_ASSIGN_OR_RETURN(Tensor host, StackLinearSources(parts, DType::kBF16));
  ENGRAM_ASSIGN_OR_RETURN(Tensor t, PrepareWeight(host, WeightUse::kLinear));
  NoteLinearFormat("bf16");
  return t;
}

void Backend::NoteLinearFormat(std::string_view format) {
  if (linear_format_.empty()) {
    linear_format_ = format;
  } else if (linear_format_ != format) {
    linear_format_ = "mixed";
  }
}

}  // namespace engram
