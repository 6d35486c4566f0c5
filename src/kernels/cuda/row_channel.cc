#include "kernels/cuda/row_channel.h"

#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_host_memory.h"
#include "kernels/cuda/cuda_kernels.h"

namespace engram::cuda {
namespace {

constexpr int kMaxMarks = 1 << 16;

// A tensor on the device with data (or empty).
Status CheckOnDevice(const Tensor& t, const char* op, const char* name) {
  if (t.device != Device::kCuda) {
    return InvalidArgument("RowChannel::{}: {} is not a CUDA device tensor", op, name);
  }
  if (t.data == nullptr && t.numel() != 0) {
    return InvalidArgument("RowChannel::{}: {} has no data", op, name);
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<CudaRowChannel>> CudaRowChannel::Create(const Options& options) {
  if (options.num_marks < 1 || options.num_marks > kMaxMarks) {
    return InvalidArgument("CreateRowChannel: {} marks, expected [1, {}]", options.num_marks,
                           kMaxMarks);
  }
  if (options.compute == nullptr) {
    return InvalidArgument("CreateRowChannel: no compute stream");
  }
  std::unique_ptr<CudaRowChannel> ch(new CudaRowChannel(options));
  ENGRAM_RETURN_IF_ERROR(ch->Activate());
  // Highest priority: compute waits for these copies, so they go first when both have work.
  int least = 0, greatest = 0;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  cudaStream_t s = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, greatest));
  ch->copy_ = CudaStream(s);
  ENGRAM_ASSIGN_OR_RETURN(ch->fence_, CreateEvent());
  ch->marks_.resize(static_cast<size_t>(options.num_marks));
  for (MarkState& m : ch->marks_) {
    ENGRAM_ASSIGN_OR_RETURN(m.done, CreateEvent());
    ENGRAM_ASSIGN_OR_RETURN(m.begin, CreateTimingEvent());
    ENGRAM_ASSIGN_OR_RETURN(m.end, CreateTimingEvent());
  }
  return ch;
}

CudaRowChannel::~CudaRowChannel() {
  // Runs on any thread: switch to the channel's device for the teardown and back after.
  int prev = -1;
  const bool had_prev = cudaGetDevice(&prev) == cudaSuccess;
  if (cudaSetDevice(opt_.device) == cudaSuccess && copy_) {
    (void)cudaStreamSynchronize(copy_.get());  // kernels may still read the caller's tensors
  }
  // Events the compute stream still waits on or records are released by CUDA once done.
  marks_.clear();
  copy_.reset();
  if (had_prev && prev != opt_.device) (void)cudaSetDevice(prev);
  (void)cudaGetLastError();
}

Status CudaRowChannel::Activate() const {
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaSetDevice(opt_.device));
  return Status::Ok();
}

Status CudaRowChannel::CheckMark(const char* op, int mark) const {
  return row_channel::CheckMark(op, mark, marks_.size());
}

// ---- copy side

Status CudaRowChannel::Upload(const Tensor& src, Tensor& dst) {
  constexpr const char* kOp = "Upload";
  if (src.device != Device::kCpu) {
    return InvalidArgument("RowChannel::Upload: src is not in host memory");
  }
  ENGRAM_RETURN_IF_ERROR(CheckOnDevice(dst, kOp, "dst"));
  ENGRAM_RETURN_IF_ERROR(row_channel::CheckUpload(src, dst));
  if (src.nbytes() == 0) return Status::Ok();
  if (src.data == nullptr) return InvalidArgument("RowChannel::Upload: src has no data");
  ENGRAM_RETURN_IF_ERROR(Activate());
  // Asynchronous when src is pinned (AllocHostStaging, RegisterHostMemory); from pageable
  // memory CUDA stages it and the call returns once src may be reused.
  ENGRAM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyHostToDevice, copy_.get()));
  return Status::Ok();
}

Status CudaRowChannel::Gather(const Tensor& table, const Tensor& rows, Tensor& dst) {
  constexpr const char* kOp = "Gather";
  ENGRAM_RETURN_IF_ERROR(CheckOnDevice(rows, kOp, "rows"));  // the table may be host memory
  ENGRAM_RETURN_IF_ERROR(CheckOnDevice(dst, kOp, "dst"));
  ENGRAM_RETURN_IF_ERROR(row_channel::CheckGather(table, rows, dst));
  const int64_t n = rows.numel();
  const int64_t row_bytes = table.dim(1) * static_cast<int64_t>(DTypeSize(table.dtype));
  if (n == 0 || row_bytes == 0) return Status::Ok();
  ENGRAM_RETURN_IF_ERROR(Activate());
  // Device memory as is; registered or pinned host memory read in place (zero-copy).
  ENGRAM_ASSIGN_OR_RETURN(const void* src,
                          DeviceReadableAddress(table, opt_.device, opt_.pageable_access,
                                                "RowChannel::Gather", "table"));
  return LaunchStatus(LaunchGatherRowBytes(src, table.dim(0), row_bytes, rows.ptr<int64_t>(), n,
                                           dst.data, opt_.error_word, copy_.get()),
                      "RowChannel::Gather");
}

Status CudaRowChannel::Scatter(const Tensor& src, const Tensor& slots, Tensor& dst) {
  constexpr const char* kOp = "Scatter";
  ENGRAM_RETURN_IF_ERROR(CheckOnDevice(src, kOp, "src"));
  ENGRAM_RETURN_IF_ERROR(CheckOnDevice(slots, kOp, "slots"));
  ENGRAM_RETURN_IF_ERROR(CheckOnDevice(dst, kOp, "dst"));
  ENGRAM_RETURN_IF_ERROR(row_channel::CheckScatter(src, slots, dst));
  const int64_t n = slots.numel();
  const int64_t row_bytes = src.dim(1) * static_cast<int64_t>(DTypeSize(src.dtype));
  if (n == 0 || row_bytes == 0) return Status::Ok();
  ENGRAM_RETURN_IF_ERROR(Activate());
  return LaunchStatus(LaunchScatterRowBytes(src.data, row_bytes, slots.ptr<int64_t>(), n, dst.data,
                                            dst.dim(0), opt_.error_word, copy_.get()),
                      "RowChannel::Scatter");
}

Status CudaRowChannel::Mark(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("Mark", mark));
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventRecord(marks_[mark].done.get(), copy_.get()));
  return Status::Ok();
}

Status CudaRowChannel::WaitMark(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("WaitMark", mark));
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(marks_[mark].done.get()));
  return Status::Ok();
}

Status CudaRowChannel::FenceCompute() {
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventRecord(fence_.get(), opt_.compute));
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(copy_.get(), fence_.get(), 0));
  return Status::Ok();
}

// ---- compute side (engine thread)

Status CudaRowChannel::BeginWait(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("BeginWait", mark));
  ENGRAM_RETURN_IF_ERROR(Activate());
  MarkState& m = marks_[mark];
  m.begun = false;
  m.timed = false;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventRecord(m.begin.get(), opt_.compute));
  m.begun = true;
  return Status::Ok();
}

Status CudaRowChannel::HostWaitBegin(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("HostWaitBegin", mark));
  if (!marks_[mark].begun) return Status::Ok();  // no BeginWait to wait for
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(marks_[mark].begin.get()));
  return Status::Ok();
}

Status CudaRowChannel::EndWait(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("EndWait", mark));
  ENGRAM_RETURN_IF_ERROR(Activate());
  MarkState& m = marks_[mark];
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(opt_.compute, m.done.get(), 0));
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventRecord(m.end.get(), opt_.compute));
  m.timed = m.begun;
  m.begun = false;
  return Status::Ok();
}

Result<double> CudaRowChannel::StallSeconds(int mark) {
  ENGRAM_RETURN_IF_ERROR(CheckMark("StallSeconds", mark));
  const MarkState& m = marks_[mark];
  if (!m.timed) return 0.0;  // no BeginWait/EndWait pair recorded for this mark
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(m.end.get()));
  float ms = 0.f;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, m.begin.get(), m.end.get()));
  return std::isfinite(ms) ? std::max(0.0, static_cast<double>(ms) / 1000.0) : 0.0;
}

}  // namespace engram::cuda
