#include "kernels/row_channel.h"

namespace engram::row_channel {

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

}  // namespace engram::row_channel
