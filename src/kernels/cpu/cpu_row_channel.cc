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

// Every id in [0, bound) (the CUDA kernels check on the device instead).
Status CheckIds(const char* op, const char* name, const Tensor& ids, int64_t bound,
                const char* what) {
  const int64_t* id = ids.ptr<int64_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (id[i] < 0 || id[i] >= bound) {
      return InvalidArgument("RowChannel::{}: {}[{}] = {} outside {} [0, {})", op, name, i, id[i],
                             what, bound);
    }
  }
  return Status::Ok();
}

}  // namespace

CpuRowChannel::CpuRowChannel(int num_marks)
    : begin_(static_cast<size_t>(std::max(num_marks, 0))),
      stall_s_(static_cast<size_t>(std::max(num_marks, 0)), 0.0) {}

Status CpuRowChannel::CheckMark(const char* op, int mark) const {
  return row_channel::CheckMark(op, mark, begin_.size());
}

Status CpuRowChannel::Upload(const Tensor& src, Tensor& dst) {
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Upload", "src", src));
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Upload", "dst", dst));
  ENGRAM_RETURN_IF_ERROR(row_channel::CheckUpload(src, dst));
  if (src.nbytes() != 0 && src.data != dst.data) std::memmove(dst.data, src.data, src.nbytes());
  return Status::Ok();
}

Status CpuRowChannel::Gather(const Tensor& table, const Tensor& rows, Tensor& dst) {
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Gather", "table", table));
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Gather", "rows", rows));
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Gather", "dst", dst));
  ENGRAM_RETURN_IF_ERROR(row_channel::CheckGather(table, rows, dst));
  ENGRAM_RETURN_IF_ERROR(CheckIds("Gather", "rows", rows, table.dim(0), "the table"));
  const size_t rb = static_cast<size_t>(table.dim(1)) * DTypeSize(table.dtype);
  const int64_t* id = rows.ptr<int64_t>();
  const auto* src = static_cast<const char*>(table.data);
  auto* out = static_cast<char*>(dst.data);
  for (int64_t i = 0; i < rows.numel(); ++i) {
    std::memcpy(out + static_cast<size_t>(i) * rb, src + static_cast<size_t>(id[i]) * rb, rb);
  }
  return Status::Ok();
}

Status CpuRowChannel::Scatter(const Tensor& src, const Tensor& slots, Tensor& dst) {
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Scatter", "src", src));
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Scatter", "slots", slots));
  ENGRAM_RETURN_IF_ERROR(CheckHostRows("Scatter", "dst", dst));
  ENGRAM_RETURN_IF_ERROR(row_channel::CheckScatter(src, slots, dst));
  ENGRAM_RETURN_IF_ERROR(CheckIds("Scatter", "slots", slots, dst.dim(0), "dst"));
  const size_t rb = static_cast<size_t>(src.dim(1)) * DTypeSize(src.dtype);
  const int64_t* slot = slots.ptr<int64_t>();
  const auto* in = static_cast<const char*>(src.data);
  auto* out = static_cast<char*>(dst.data);
  for (int64_t i = 0; i < slots.numel(); ++i) {
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
