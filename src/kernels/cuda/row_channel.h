// CudaRowChannel: the CUDA backend's RowChannel (kernels/row_channel.h; internal to
// src/kernels/cuda, made by CudaBackend::CreateRowChannel).
//
// Streams and events:
//  - a copy stream of its own (non-blocking, highest priority, on the backend's device): Upload
//    is a cudaMemcpyAsync on it, Gather and Scatter are kernels (row_copy.cu) on it;
//  - per mark m: done[m] (no timing) recorded on the copy stream by Mark(m); begin[m] and end[m]
//    (timing) recorded on the backend's compute stream by BeginWait(m) and by EndWait(m) after
//    cudaStreamWaitEvent(compute, done[m]).
// EndWait(m) orders compute after the latest Mark(m) issued before it: the caller orders the
// two calls on the host (the copy engine's condition variable), as cudaStreamWaitEvent waits for
// the most recent record only (a mark never recorded waits for nothing).
//
// Gather's table may be device memory or host memory registered with
// Backend::RegisterHostMemory (or pinned by AllocHostStaging): the kernel then reads the rows in
// place over the bus (zero-copy). Row ids and slots live on the device and are checked there: a
// row outside the table is gathered as zeros, a slot outside dst is skipped, and either sets a
// bit in the backend's error word, reported as OUT_OF_RANGE by the backend's next Synchronize
// or CopyToHost (the copy engine validates row ids before, so this is a guard, not a path).
//
// Ownership: the channel borrows the backend's compute stream and error word, so the backend
// must outlive it. Tensors passed in must stay alive until their work completed (WaitMark of a
// later mark, or the compute stream passing EndWait). The destructor waits for the copy stream.
// Threads: as RowChannel; each method first makes the backend's device current on the calling
// thread (the copy thread is not the engine thread), and leaves it current.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/cuda/cuda_handles.h"
#include "kernels/row_channel.h"

namespace engram::cuda {

class CudaRowChannel final : public RowChannel {
 public:
  struct Options {
    int device = 0;                  // the backend's device index
    cudaStream_t compute = nullptr;  // the backend's compute stream (borrowed)
    bool pageable_access = false;    // the device reads pageable host memory (HMM/ATS)
    uint32_t* error_word = nullptr;  // device address of the backend's error word (borrowed)
    int num_marks = 0;               // marks [0, num_marks)
  };
  // Creates the copy stream and the events on options.device. INVALID_ARGUMENT for
  // num_marks < 1; CUDA errors as Status.
  static Result<std::unique_ptr<CudaRowChannel>> Create(const Options& options);
  ~CudaRowChannel() override;
  CudaRowChannel(const CudaRowChannel&) = delete;
  CudaRowChannel& operator=(const CudaRowChannel&) = delete;

  Status Upload(const Tensor& src, Tensor& dst) override;
  Status Gather(const Tensor& table, const Tensor& rows, Tensor& dst) override;
  Status Scatter(const Tensor& src, const Tensor& slots, Tensor& dst) override;
  Status Mark(int mark) override;
  Status WaitMark(int mark) override;
  Status FenceCompute() override;

  Status BeginWait(int mark) override;
  Status HostWaitBegin(int mark) override;
  Status EndWait(int mark) override;
  Result<double> StallSeconds(int mark) override;

 private:
  struct MarkState {
    CudaEvent done;   // copy side: recorded on the copy stream by Mark
    CudaEvent begin;  // compute side (engine thread only) from here on
    CudaEvent end;
    bool begun = false;  // BeginWait recorded `begin` since the last EndWait
    bool timed = false;  // begin and end hold a BeginWait/EndWait pair
  };

  explicit CudaRowChannel(const Options& options) : opt_(options) {}
  Status Activate() const;
  Status CheckMark(const char* op, int mark) const;

  const Options opt_;
  CudaStream copy_;
  std::vector<MarkState> marks_;  // sized once by Create
  CudaEvent fence_;               // FenceCompute: recorded on compute, waited on by copy
};

}  // namespace engram::cuda
