// CudaBackend: the Backend implementation on one CUDA device (internal to src/kernels/cuda;
// the rest of the program sees only backend.h and cuda_backend.h).
//
// Ownership: the backend owns one compute stream, a cuBLAS handle with its workspace, the
// scratch buffers, the layout staging buffers and the error word; tensors it hands out own
// their device memory (cudaFree in the owner's deleter) and may outlive it. Row channels
// (CreateRowChannel) borrow the compute stream and the error word and must not outlive it.
// Memory: Alloc is a plain cudaMalloc (synchronizing, so keep it out of the step loop).
// UploadLayout packs all arrays of a step into one pinned staging buffer (two, used in turn)
// and issues a single H2D copy into one device buffer that is reused by every step, so the
// device addresses stay the same from step to step unless a bigger step makes it grow.
// Graph capture (BeginCapture/EndCapture/Replay): stream capture of the compute stream in
// thread-local mode; whatever would allocate or synchronize refuses while capturing, and every
// reallocation of the layout buffer or a scratch buffer increases capture_epoch(), so graphs
// that hold the old addresses are never replayed (NOTES.md, "CUDA graphs").
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_handles.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/fp8_linear.h"

namespace engram::cuda {

// The kernels' element type of a float dtype (F32, F16, BF16); INVALID_ARGUMENT naming op and
// operand otherwise.
Result<Elem> ToElem(DType t, const char* op, const char* name);

class CudaBackend final : public Backend {
 public:
  static Result<std::unique_ptr<CudaBackend>> Create(const BackendOptions& options);
  ~CudaBackend() override;

  std::string_view name() const override { return "cuda"; }
  Device device() const override { return Device::kCuda; }
  DType kv_dtype() const override { return DType::kF32; }
  std::string pci_bus_id() const override { return pci_bus_id_; }
  cudaStream_t stream() const { return stream_.get(); }

  Result<Tensor> Alloc(DType dtype, std::vector<int64_t> shape) override;
  Result<Tensor> AllocZeros(DType dtype, std::vector<int64_t> shape) override;
  Result<Tensor> PrepareWeight(const Tensor& host, WeightUse use) override;
  // Int8 parts in blocks of [1, 32] (BackendOptions::weights "auto" or "int8"), or any parts
  // with weights "int8" (quantized on the device), become int8 weights (cuda_int8.cc) once a
  // check of the first against float64 passes; FP8 parts in 128 x 128 blocks become
  // block-scaled FP8 GEMM weights (cuda_fp8.cc) where cuBLASLt runs them on this device and a
  // check against their float64 product passes on the first; anything else goes to
  // Backend::PrepareLinear (dequantized to BF16).
  Result<Tensor> PrepareLinear(const std::vector<LinearSource>& parts) override;
  Status CopyToHost(const Tensor& src, void* dst) override;
  Status CopyFromHost(const void* src, Tensor& dst) override;
  Status UploadLayout(BatchLayout& layout) override;
  Status Synchronize() override;

  // Pinned (cudaHostAlloc, portable and mapped) zero-filled CPU tensor.
  Result<Tensor> AllocHostStaging(DType dtype, std::vector<int64_t> shape) override;
  // cudaHostRegister, portable and mapped (cuda_host_memory.h: RegisterHost).
  Status RegisterHostMemory(void* ptr, size_t bytes) override;
  void UnregisterHostMemory(void* ptr, size_t bytes) override;
  // A CudaRowChannel (row_channel.h) with its own copy stream; it borrows this backend's compute
  // stream and error word, so the backend must outlive it.
  Result<std::unique_ptr<RowChannel>> CreateRowChannel(int num_marks) override;

  Status Embedding(const Tensor& table, const Tensor& ids, Tensor& out) override;
  Status RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
  Status Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override;
  Status Add(Tensor& x, const Tensor& y) override;
  Status SwiGlu(const Tensor& gate_up, Tensor& out) override;
  Status Rope(Tensor& qkv, const BatchLayout& layout, const RopeParams& p) override;
  Status PagedAttention(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                        const BatchLayout& layout, const AttentionParams& p, Tensor& out) override;
  Status GatherRows(const Tensor& table, const Tensor& rows, Tensor& out) override;
  Status EngramGate(const Tensor& k, const Tensor& h, const Tensor& w_key, const Tensor& w_query,
                    float eps, Tensor& v) override;
  Status EngramShortConv(const Tensor& v, const Tensor& norm_w, const Tensor& conv_w,
                         const EngramConvParams& p, const BatchLayout& layout, Tensor& state,
                         Tensor& h) override;
  Status ArgmaxRows(const Tensor& logits, Tensor& ids) override;

  Status BeginCapture() override;
  Result<std::unique_ptr<CapturedGraph>> EndCapture() override;
  void AbortCapture() override;
  Status Replay(const CapturedGraph& graph) override;
  uint64_t capture_epoch() const override { return epoch_; }

 private:
  CudaBackend() = default;
  // Makes this backend's device current on the calling thread (a no-op while capturing: the
  // capture's thread made it current and nothing on that thread changes it until the end).
  Status Activate() const;
  // FAILED_PRECONDITION naming `op` while a capture is in progress (op would allocate or
  // synchronize, which breaks a capture).
  Status NotCapturing(const char* op) const;
  // s.Get(bytes), refused while capturing when s would have to grow; growth bumps epoch_.
  Result<void*> GetScratch(Scratch& s, size_t bytes, const char* op);
  // Waits for the stream, then turns error bits set by kernels into OUT_OF_RANGE (and clears
  // them).
  Status SyncAndCheck();
  // cuda_fp8.cc: why `parts` cannot run as an FP8 GEMM here ("" when they can); *fp8 says
  // whether they are FP8 in 128 x 128 blocks at all.
  std::string Fp8GemmRefusal(const std::vector<LinearSource>& parts, bool* fp8);
  Result<Tensor> UploadFp8Linear(const std::vector<LinearSource>& parts);
  // The first FP8 weight against the float64 product of its dequantized parts.
  Status CheckFp8Linear(const std::vector<LinearSource>& parts, const Tensor& w);
  // Linear for a Layout::kFp8Block128 weight (shapes already checked, no bias).
  Status LinearFp8(const Tensor& x, const Tensor& w, Tensor& out);
  // cuda_int8.cc: `parts` as a Layout::kInt8Rows32 weight where the int8 path takes them
  // (*used), else *used = false and an empty tensor (the caller goes on to the other paths);
  // an error for malformed int8 parts.
  Result<Tensor> PrepareInt8Linear(const std::vector<LinearSource>& parts, bool* used);
  Result<Tensor> AllocInt8Linear(int64_t n, int64_t k);
  // int8 files' codes and scales as stored (INVALID_ARGUMENT naming the part for a bad scale
  // tensor or a code of -128).
  Result<Tensor> UploadInt8Linear(const std::vector<LinearSource>& parts);
  // A float host weight [N, K] quantized on the device (common/int8_block.h's rounding).
  Result<Tensor> QuantizeInt8Linear(const Tensor& host);
  // The first int8 weight on 256 sampled rows: its device codes against common/int8_block.h
  // (quantized from the float `host`) or the files' (`host` empty), both Linear paths against
  // float64 products of them. "" when all agree, else what differs; an error status for a
  // CUDA failure.
  Result<std::string> CheckInt8Linear(const std::vector<LinearSource>& parts, const Tensor& host,
                                      const Tensor& w);
  // Linear for a Layout::kInt8Rows32 weight (shapes already checked, no bias).
  Status LinearInt8(const Tensor& x, const Tensor& w, Tensor& out);

  // Checks that `t` is a device tensor of this backend (data set, device kCuda).
  static Status CheckDevice(const Tensor& t, const char* op, const char* name);

  int device_ = 0;
  int sm_ = 0;                    // compute capability, major * 10 + minor
  std::string pci_bus_id_;        // cudaDeviceGetPCIBusId, "" when it failed
  bool pageable_access_ = false;  // the device can read pageable host memory (HMM/ATS)
  CudaStream stream_;
  CublasHandle cublas_;
  DeviceBuffer cublas_workspace_;
  PinnedBuffer error_word_;  // uint32, mapped: kernels (row channels' too) store KernelError bits
  uint32_t* error_dev_ = nullptr;
  Scratch linear_scratch_;  // BF16 copy of Linear's x
  Scratch conv_scratch_;    // per-token inverse RMS of EngramShortConv
  Scratch fp8_scratch_;     // FP8 codes and scales of Linear's x, or a dequantized weight
  Scratch int8_scratch_;    // int8 codes and scales of Linear's x, or a dequantized chunk

  // The FP8 GEMM path: tried at the first FP8 weight; fp8_state_ 0 untried, 1 on, -1 off.
  Fp8Gemm fp8_gemm_;
  int fp8_state_ = 0;
  // The int8 path: checked at the first int8 weight; int8_state_ 0 unchecked, 1 on, -1 off.
  int int8_state_ = 0;
  std::string weights_ = "auto";  // BackendOptions::weights

  struct Staging {
    PinnedBuffer host;
    CudaEvent copied;  // recorded after the H2D copy that last read `host`
  };
  std::array<Staging, 2> staging_;
  int next_staging_ = 0;
  std::shared_ptr<void> layout_dev_;  // device copy of the packed layout arrays
  size_t layout_dev_bytes_ = 0;

  bool capturing_ = false;  // between BeginCapture and EndCapture/AbortCapture
  uint64_t epoch_ = 0;      // capture_epoch(): reallocations of layout_dev_ and the scratches
};

}  // namespace engram::cuda
