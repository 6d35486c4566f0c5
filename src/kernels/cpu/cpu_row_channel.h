// CpuRowChannel: the RowChannel of the CPU backend (row_channel.h). The device is host memory,
// so Upload, Gather and Scatter are memcpy on the calling (copy) thread and finish before they
// return; marks order nothing (the copy engine's condition variable already does); the stall
// of a mark is the host wall time between BeginWait and EndWait.
//
// Thread safety: as RowChannel (copy side from one thread, compute side from another).
#pragma once

#include <chrono>
#include <vector>

#include "kernels/row_channel.h"

namespace engram {

class CpuRowChannel final : public RowChannel {
 public:
  explicit CpuRowChannel(int num_marks);

  Status Upload(const Tensor& src, Tensor& dst) override;
  Status Gather(const Tensor& table, const Tensor& rows, Tensor& dst) override;
  Status Scatter(const Tensor& src, const Tensor& slots, Tensor& dst) override;
  Status Mark(int mark) override { return CheckMark("Mark", mark); }
  Status WaitMark(int mark) override { return CheckMark("WaitMark", mark); }
  Status FenceCompute() override { return Status::Ok(); }  // compute is the host
  Status BeginWait(int mark) override;
  Status HostWaitBegin(int mark) override { return CheckMark("HostWaitBegin", mark); }
  Status EndWait(int mark) override;
  Result<double> StallSeconds(int mark) override;

 private:
  using Clock = std::chrono::steady_clock;
  Status CheckMark(const char* op, int mark) const;

  // Compute side only (engine thread).
  std::vector<Clock::time_point> begin_;
  std::vector<double> stall_s_;
};

}  // namespace engram
