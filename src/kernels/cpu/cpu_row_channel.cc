#include "kernels/cpu/cpu_row_channel.h"

#include <cstring>

namespace engram {
namespace {

Status CheckHostRows(const char* op, const char* name, const Tensor& t) {
  if (t.device != Device::kCpu) {
    return InvalidArgument("RowChannel::{}: {} is not in host memory (CPU backend)", op, name);
  }
  if (t.data == nullptr && t.numel() != 0) {
    return InvalidArgument("RowChannel::{}: {} has no data", op, name);
  }
  return Status::Ok();
}

Status CheckRowMatrix(const char* op, const char* name, const Tensor& t) {
  ENGRAM_RETURN_IF_ERROR(CheckHostRows(op, name, t));
  return row_channel::CheckRowMatrix(op, name, t);
}

Status CheckIndex(const char* op, const char* name, const Tensor& t) {
  ENGRAM_RETURN_IF_ERROR(CheckHostRows(op, name, t));
  return row_channel::CheckI64(op, name, t);
}

using row_channel::CheckSameRows;

}  // namespace

CpuRowChannel::CpuRowChannel(int num_marks)
    : begin_(static_cast<size_t>(std::max(num_marks, 0))),
      stall_s_(static_cast<size_t>(std::max(num_marks, 0)), 0.0) {}

Status CpuRowChannel::CheckMark(const char* op, int mark) const {
  if (mark < 0 || static_cast<size_t>(mark) >= begin_.size()) {
    return InvalidArgument("RowChannel::{}: mark {} outside [0, {})", op, mark, begin_.size());
  }
  return Status::Ok();
}

Status CpuRowChannel::Upload(const Tensor& src, Tensor& dst) {
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Upload", "src", src));
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Upload", "dst", dst));
  if (src.nbytes() != dst.nbytes()) {
    return InvalidArgument("RowChannel::Upload: src holds {} bytes ({} {}), dst {} ({} {})",
                           src.nbytes(), DTypeName(src.dtype), src.ShapeString(), dst.nbytes(),
                           DTypeName(dst.dtype), dst.ShapeString());
  }
  if (src.nbytes() != 0 && src.data != dst.data) std::memmove(dst.data, src.data, src.nbytes());
  return Status::Ok();
}

Status CpuRowChannel::Gather(const Tensor& table, const Tensor& rows, Tensor& dst) {
  ENGRAM_RETURN_IF_ERROR(CheckRowMatrix("Gather", "table", table));
  ENGRAM_RETURN_IF_ERROR(CheckIndex("Gather", "rows", rows));
  ENGRAM_RETURN_IF_ERROR(CheckRowMatrix("Gather", "dst", dst));
  ENGRAM_RETURN_IF_ERROR(CheckSameRows("Gather", table, "table", dst, "dst"));
  const int64_t n = rows.numel(), R = table.dim(0);
  if (dst.dim(0) < n) {
    return InvalidArgument("RowChannel::Gather: dst has {} rows for {} row ids", dst.dim(0), n);
  }
  const size_t rb = static_cast<size_t>(table.dim(1)) * DTypeSize(table.dtype);
  const int64_t* id = rows.ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (id[i] < 0 || id[i] >= R) {
      return InvalidArgument("RowChannel::Gather: rows[{}] = {} outside the table [0, {})", i,
                             id[i], R);
    }
  }
  const auto* src = static_cast<const char*>(table.data);
  auto* out = static_cast<char*>(dst.data);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + static_cast<size_t>(i) * rb, src + static_cast<size_t>(id[i]) * rb, rb);
  }
  return Status::Ok();
}

Status CpuRowChannel::Scatter(const Tensor& src, const Tensor& slots, Tensor& dst) {
  ENGRAM_RETURN_IF_ERROR(CheckRowMatrix("Scatter", "src", src));
  ENGRAM_RETURN_IF_ERROR(CheckIndex("Scatter", "slots", slots));
  ENGRAM_RETURN_IF_ERROR(CheckRowMatrix("Scatter", "dst", dst));
  ENGRAM_RETURN_IF_ERROR(CheckSameRows("Scatter", src, "src", dst, "dst"));
  const int64_t n = slots.numel(), R = dst.dim(0);
  if (src.dim(0) < n) {
    return InvalidArgument("RowChannel::Scatter: src has {} rows for {} slots", src.dim(0), n);
  }
  const size_t rb = static_cast<size_t>(src.dim(1)) * DTypeSize(src.dtype);
  const int64_t* slot = slots.ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (slot[i] < 0 || slot[i] >= R) {
      return InvalidArgument("RowChannel::Scatter: slots[{}] = {} outside dst [0, {})", i, slot[i],
                             R);
    }
  }
  const auto* in = static_cast<const char*>(src.data);
  auto* out = static_cast<char*>(dst.data);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(out + static_cast<size_t>(slot[i]) * rb, in + static_cast<size_t>(i) * rb, rb);
  }
  return Status::Ok();
}

Status CpuRowChannel::BeginWait(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("BeginWait", mark));
  begin_[mark] = Clock::now();
  return Status::Ok();
}

Status CpuRowChannel::EndWait(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("EndWait", mark));
  stall_s_[mark] = std::chrono::duration<double>(Clock::now() - begin_[mark]).count();
  return Status::Ok();
}

Result<double> CpuRowChannel::StallSeconds(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("StallSeconds", mark));
  return stall_s_[mark];
}

}  // namespace engram
