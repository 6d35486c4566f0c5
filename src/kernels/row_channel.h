// RowChannel: the path Engram rows take from host memory to the backend's device while the
// compute stream runs earlier layers. The prefetch copy thread issues copies on it and marks
// them; the engine thread, at an Engram layer, makes compute wait for exactly one mark.
//
// CPU backend: copies are done at once on the calling thread (memcpy); marks order nothing
// (the copy engine's condition variable already has), and the stall is the host wall time
// between BeginWait and EndWait.
// CUDA backend: a copy stream of its own; Upload is cudaMemcpyAsync (asynchronous when the
// source is pinned, e.g. from Backend::AllocHostStaging); Gather and Scatter are kernels on the
// copy stream; Mark records an event; EndWait makes the compute stream wait for it
// (cudaStreamWaitEvent), with events recorded on the compute stream around the wait so
// StallSeconds is the time the device sat waiting for the rows.
//
// Thread safety: the copy side (Upload, Gather, Scatter, Mark, WaitMark) from one thread at a
// time; the compute side (FenceCompute, BeginWait, HostWaitBegin, EndWait, StallSeconds) from
// the engine thread, which also uses the Backend. Marks are indices in [0, num_marks) given to
// Backend::CreateRowChannel; a mark is reused only after the step that used it ended (StallSeconds
// was read).
#pragma once

#include "common/status.h"
#include "kernels/tensor.h"

namespace engram {

class RowChannel {
 public:
  virtual ~RowChannel() = default;

  // ---- copy side
  // dst (device) = src (host), src.nbytes() == dst.nbytes(). src must stay unchanged until a
  // WaitMark of a later mark returns.
  virtual Status Upload(const Tensor& src, Tensor& dst) = 0;
  // dst[i, :] = table[rows[i], :] for i < rows.numel(), in the table's dtype (F32/BF16/F16, or U8
  // for packed FP8 rows: copied as stored, scales included).
  // table [R, Dh]: device memory, or host memory the device can read (registered with
  // Backend::RegisterHostMemory: a zero-copy read over the bus); rows I64 [n] on the device;
  // dst [>= n, Dh] on the device. Rows outside [0, R) are INVALID_ARGUMENT where checkable.
  virtual Status Gather(const Tensor& table, const Tensor& rows, Tensor& dst) = 0;
  // dst[slots[i], :] = src[i, :] for i < slots.numel(); src, dst device tensors of one dtype
  // and Dh; slots I64 [n] on the device, distinct.
  virtual Status Scatter(const Tensor& src, const Tensor& slots, Tensor& dst) = 0;
  // Marks the copies issued so far as `mark`'s.
  virtual Status Mark(int mark) = 0;
  // Blocks the calling (copy) thread until `mark`'s copies finished.
  virtual Status WaitMark(int mark) = 0;
  // Copies issued after this call start only after everything the compute stream was given
  // so far (CUDA: an event recorded on compute, waited on by the copy stream). Called by the
  // engine thread before a step's copies, so they never overwrite rows an earlier step's
  // compute may still read. No-op on CPU.
  virtual Status FenceCompute() = 0;

  // ---- compute side (engine thread)
  // Called at the Engram layer before waiting for the rows (records where compute stands).
  virtual Status BeginWait(int mark) = 0;
  // Blocks the host until compute has reached BeginWait(mark)'s point (CUDA: synchronizes on
  // that event; no-op on CPU, where compute is the host). The synchronous mode (prefetch off)
  // calls it so that its rows are fetched only when the layer needs them.
  virtual Status HostWaitBegin(int mark) = 0;
  // Compute continues only after `mark`'s copies (the device waits, the host does not).
  virtual Status EndWait(int mark) = 0;
  // Seconds compute waited between BeginWait and EndWait of `mark`; on CUDA it waits for the
  // device to pass EndWait's point.
  virtual Result<double> StallSeconds(int mark) = 0;
};

// Operand checks shared by the implementations, after each has checked where the operands live
// (host or device). Each returns INVALID_ARGUMENT with a message that starts
// "RowChannel::<op>: <name>".
namespace row_channel {
// Upload: src and dst hold the same number of bytes.
Status CheckUpload(const Tensor& src, const Tensor& dst);
// Gather: table [R, Dh], rows I64, dst [>= rows.numel(), Dh] of the table's dtype.
Status CheckGather(const Tensor& table, const Tensor& rows, const Tensor& dst);
// Scatter: src [>= slots.numel(), Dh], slots I64, dst [*, Dh] of src's dtype.
Status CheckScatter(const Tensor& src, const Tensor& slots, const Tensor& dst);
// mark in [0, num_marks).
Status CheckMark(const char* op, int mark, size_t num_marks);
}  // namespace row_channel

}  // namespace engram
