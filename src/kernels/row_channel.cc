#include "kernels/row_channel.h"

namespace engram::row_channel {
namespace {

Status CheckRowMatrix(const char* op, const char* name, const Tensor& t) {
  if (t.shape.size() != 2) {
    return InvalidArgument("RowChannel::{}: {} has shape {}, expected [rows, Dh]", op, name,
                           t.ShapeString());
  }
  return Status::Ok();
}

Status CheckI64(const char* op, const char* name, const Tensor& t) {
  if (t.dtype != DType::kI64) {
    return InvalidArgument("RowChannel::{}: {} has dtype {}, expected I64", op, name,
                           DTypeName(t.dtype));
  }
  return Status::Ok();
}

Status CheckSameRows(const char* op, const Tensor& a, const char* an, const Tensor& b,
                     const char* bn) {
  if (a.dtype != b.dtype || a.dim(1) != b.dim(1)) {
    return InvalidArgument("RowChannel::{}: {} is {} {} but {} is {} {}; expected one dtype and Dh",
                           op, an, DTypeName(a.dtype), a.ShapeString(), bn, DTypeName(b.dtype),
                           b.ShapeString());
  }
  return Status::Ok();
}

}  // namespace

Status CheckUpload(const Tensor& src, const Tensor& dst) {
  if (src.nbytes() != dst.nbytes()) {
    return InvalidArgument("RowChannel::Upload: src holds {} bytes ({} {}), dst {} ({} {})",
                           src.nbytes(), DTypeName(src.dtype), src.ShapeString(), dst.nbytes(),
                           DTypeName(dst.dtype), dst.ShapeString());
  }
  return Status::Ok();
}

Status CheckGather(const Tensor& table, const Tensor& rows, const Tensor& dst) {
  constexpr const char* kOp = "Gather";
  ENGRAM_RETURN_IF_ERROR(CheckRowMatrix(kOp, "table", table));
  ENGRAM_RETURN_IF_ERROR(CheckI64(kOp, "rows", rows));
  ENGRAM_RETURN_IF_ERROR(CheckRowMatrix(kOp, "dst", dst));
  ENGRAM_RETURN_IF_ERROR(CheckSameRows(kOp, table, "table", dst, "dst"));
  if (dst.dim(0) < rows.numel()) {
    return InvalidArgument("RowChannel::Gather: dst has {} rows for {} row ids", dst.dim(0),
                           rows.numel());
  }
  return Status::Ok();
}

Status CheckScatter(const Tensor& src, const Tensor& slots, const Tensor& dst) {
  constexpr const char* kOp = "Scatter";
  ENGRAM_RETURN_IF_ERROR(CheckRowMatrix(kOp, "src", src));
  ENGRAM_RETURN_IF_ERROR(CheckI64(kOp, "slots", slots));
  ENGRAM_RETURN_IF_ERROR(CheckRowMatrix(kOp, "dst", dst));
  ENGRAM_RETURN_IF_ERROR(CheckSameRows(kOp, src, "src", dst, "dst"));
  if (src.dim(0) < slots.numel()) {
    return InvalidArgument("RowChannel::Scatter: src has {} rows for {} slots", src.dim(0),
                           slots.numel());
  }
  return Status::Ok();
}

Status CheckMark(const char* op, int mark, size_t num_marks) {
  if (mark < 0 || static_cast<size_t>(mark) >= num_marks) {
    return InvalidArgument("RowChannel::{}: mark {} outside [0, {})", op, mark, num_marks);
  }
  return Status::Ok();
}

}  // namespace engram::row_channel
