// CudaBackend lifecycle, memory, copies and the per-step layout upload. Ops: cuda_ops.cc.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "common/logging.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_host_memory.h"
#include "kernels/cuda/row_channel.h"

namespace engram {
namespace cuda {
namespace {

constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;  // what cuBLAS asks for on Hopper
constexpr size_t kConvertChunkElems = size_t{16} << 20;     // PrepareWeight conversion chunk

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

std::string DescribeKernelErrors(uint32_t bits) {
  std::string s;
  auto add = [&](uint32_t bit, const char* what) {
    if ((bits & bit) == 0) return;
    if (!s.empty()) s += "; ";
    s += what;
  };
  add(kErrTokenId, "Embedding: a token id outside [0, vocab) (its row was written as NaN)");
  add(kErrTableRow, "GatherRows: a row number outside the table (its output was written as NaN)");
  add(kErrKvSlot, "PagedAttention: a slot or block table entry outside the KV cache (skipped)");
  add(kErrStateSlot, "EngramShortConv: a state slot outside the state tensor (read as zero)");
  add(kErrChannelRow,
      "RowChannel Gather/Scatter: a row outside the table or a slot outside dst (gathered as "
      "zero, scatter skipped)");
  return s;
}

// An instantiated graph with what Replay checks: the backend that captured it and its epoch.
class CudaCapturedGraph final : public CapturedGraph {
 public:
  CudaCapturedGraph(CudaGraphExec exec, const void* owner, uint64_t epoch)
      : exec_(std::move(exec)), owner_(owner), epoch_(epoch) {}
  cudaGraphExec_t exec() const { return exec_.get(); }
  const void* owner() const { return owner_; }
  uint64_t epoch() const { return epoch_; }

 private:
  CudaGraphExec exec_;
  const void* owner_;
  uint64_t epoch_;
};

}  // namespace

Result<Elem> ToElem(DType t, const char* op, const char* name) {
  switch (t) {
    case DType::kF32:
      return Elem::kF32;
    case DType::kF16:
      return Elem::kF16;
    case DType::kBF16:
      return Elem::kBF16;
    default:
      return InvalidArgument("{}: {} has dtype {}, expected F32, F16 or BF16", op, name,
                             DTypeName(t));
  }
}

Result<std::unique_ptr<CudaBackend>> CudaBackend::Create(const BackendOptions& options) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    return Unavailable("CUDA backend: no usable GPU ({}: {})", cudaGetErrorName(e),
                       cudaGetErrorString(e));
  }
  if (count == 0) return Unavailable("CUDA backend: no GPU visible");
  if (options.device_index < 0 || options.device_index >= count) {
    return InvalidArgument("CUDA backend: device_index {} outside [0, {})", options.device_index,
                           count);
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_ = options.device_index;
  b->weights_ = options.weights;
  ENGRAM_RETURN_IF_ERROR(b->Activate());

  cudaDeviceProp prop{};
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, b->device_));
  if (prop.major < 8) {
    return Unavailable(
        "CUDA backend: device {} ({}) has compute capability {}.{}; BF16 GEMMs "
        "need 8.0 or newer",
        b->device_, prop.name, prop.major, prop.minor);
  }
  b->sm_ = prop.major * 10 + prop.minor;
  int pageable = 0;
  ENGRAM_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, b->device_));
  b->pageable_access_ = pageable != 0;
  char bus[32] = {};
  if (cudaDeviceGetPCIBusId(bus, sizeof(bus), b->device_) == cudaSuccess) {
    b->pci_bus_id_ = bus;
  } else {
    (void)cudaGetLastError();  // NUMA placement then falls back to the CPUs' node
  }

  ENGRAM_ASSIGN_OR_RETURN(b->stream_, CreateStream());
  ENGRAM_ASSIGN_OR_RETURN(b->cublas_, CreateCublas());
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasSetStream(b->cublas_.get(), b->stream()));
  ENGRAM_ASSIGN_OR_RETURN(b->cublas_workspace_, AllocDevice(kCublasWorkspaceBytes));
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(b->cublas_.get(), b->cublas_workspace_.data(),
                                                   b->cublas_workspace_.bytes()));

  ENGRAM_ASSIGN_OR_RETURN(b->error_word_, AllocPinned(sizeof(uint32_t), cudaHostAllocMapped));
  *static_cast<volatile uint32_t*>(b->error_word_.data()) = 0;
  void* err_dev = nullptr;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaHostGetDevicePointer(&err_dev, b->error_word_.data(), 0));
  b->error_dev_ = static_cast<uint32_t*>(err_dev);
  for (Staging& s : b->staging_) {
    ENGRAM_ASSIGN_OR_RETURN(s.copied, CreateEvent());
  }

  // A first launch tells a binary without code for this GPU apart from a working one.
  const cudaError_t probe = LaunchProbe(b->stream());
  if (probe == cudaErrorNoKernelImageForDevice || probe == cudaErrorInvalidDeviceFunction) {
    return Unavailable(
        "CUDA backend: this build has no kernels for {} (sm_{}{}); configure with "
        "CMAKE_CUDA_ARCHITECTURES={}{}",
        prop.name, prop.major, prop.minor, prop.major, prop.minor);
  }
  ENGRAM_CUDA_RETURN_IF_ERROR(probe);
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(b->stream()));
  spdlog::info("CUDA backend: device {} {} (sm_{}{}, {} SMs, {:.1f} GiB)", b->device_, prop.name,
               prop.major, prop.minor, prop.multiProcessorCount,
               static_cast<double>(prop.totalGlobalMem) / (1 << 30));
  return b;
}

CudaBackend::~CudaBackend() {
  AbortCapture();
  if (stream_) cudaStreamSynchronize(stream_.get());
}

Status CudaBackend::Activate() const {
  if (capturing_) return Status::Ok();
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
  return Status::Ok();
}

Status CudaBackend::NotCapturing(const char* op) const {
  if (!capturing_) return Status::Ok();
  return FailedPrecondition(
      "{}: not allowed during CUDA graph capture (it would allocate or synchronize)", op);
}

Result<void*> CudaBackend::GetScratch(Scratch& s, size_t bytes, const char* op) {
  if (!s.Holds(bytes)) {
    if (capturing_) {
      return FailedPrecondition(
          "{}: its scratch buffer would have to grow to {} bytes during CUDA graph capture (run "
          "the step's shape once without capture first)",
          op, bytes);
    }
    ++epoch_;  // the old buffer is freed: graphs captured over it must not run again
  }
  return s.Get(bytes, stream());
}

Status CudaBackend::SyncAndCheck() {
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));
  auto* word = static_cast<volatile uint32_t*>(error_word_.data());
  const uint32_t bits = *word;
  if (bits != 0) {
    *word = 0;
    return OutOfRange("CUDA backend: a kernel met an unusable index: {}",
                      DescribeKernelErrors(bits));
  }
  return Status::Ok();
}

Status CudaBackend::CheckDevice(const Tensor& t, const char* op, const char* name) {
  if (t.device != Device::kCuda) {
    return InvalidArgument("{}: {} is not a CUDA device tensor", op, name);
  }
  if (t.data == nullptr) return InvalidArgument("{}: {} has no data", op, name);
  return Status::Ok();
}

Result<Tensor> CudaBackend::Alloc(DType dtype, std::vector<int64_t> shape) {
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("Alloc: negative dimension in shape");
  }
  ENGRAM_RETURN_IF_ERROR(NotCapturing("Alloc"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  Tensor t;
  t.dtype = dtype;
  t.device = Device::kCuda;
  t.shape = std::move(shape);
  void* p = nullptr;
  // At least 256 bytes, so an empty tensor still has an address.
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, std::max<size_t>(t.nbytes(), 256)));
  t.owner = std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
  t.data = p;
  return t;
}

Result<Tensor> CudaBackend::AllocZeros(DType dtype, std::vector<int64_t> shape) {
  ENGRAM_ASSIGN_OR_RETURN(Tensor t, Alloc(dtype, std::move(shape)));
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(t.data, 0, t.nbytes(), stream()));
  return t;
}

Result<Tensor> CudaBackend::PrepareWeight(const Tensor& host, WeightUse use) {
  constexpr const char* kOp = "PrepareWeight";
  // An Engram table of packed FP8 rows (U8 [rows, Fp8RowBytes(Dh)]) is copied as stored;
  // GatherRows dequantizes it.
  const bool fp8_table = use == WeightUse::kEmbedding && host.dtype == DType::kU8;
  Elem src = Elem::kF32;
  if (!fp8_table) {
    ENGRAM_ASSIGN_OR_RETURN(src, ToElem(host.dtype, kOp, "weight"));
  }
  if (host.data == nullptr && host.numel() != 0) {
    return InvalidArgument("{}: weight {} has no data", kOp, host.ShapeString());
  }
  if (host.layout != Layout::kRowMajor) {
    return InvalidArgument("{}: weight must be row-major", kOp);
  }
  DType target = DType::kF32;
  switch (use) {
    case WeightUse::kLinear:
      if (host.shape.size() != 2) {
        return InvalidArgument("{}: a Linear weight must be [N, K], got {}", kOp,
                               host.ShapeString());
      }
      if (weights_ == "int8" && int8_state_ >= 0 && host.numel() > 0) {
        // Quantized as PrepareLinear does, which comes back here only once the int8 path is off
        // (or for an empty weight, which this condition keeps from recursing).
        LinearSource part;
        part.w = host;
        part.name = "weight";
        return PrepareLinear({part});
      }
      target = DType::kBF16;
      break;
    case WeightUse::kEmbedding:  // BF16, F16 and U8 stay (GatherRows/Embedding widen on read)
      target = host.dtype;       // F32, F16, BF16 (ToElem above) or U8
      break;
    case WeightUse::kVector:
      target = DType::kF32;
      break;
  }
  ENGRAM_ASSIGN_OR_RETURN(Tensor dev, Alloc(target, host.shape));
  const int64_t n = host.numel();
  if (n == 0) return dev;
  if (host.dtype == target) {
    ENGRAM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dev.data, host.data, host.nbytes(), cudaMemcpyDefault, stream()));
  } else {
    // Raw chunks go through a device staging buffer and are converted there.
    const size_t esize = DTypeSize(host.dtype);
    const size_t chunk = std::min<size_t>(kConvertChunkElems, static_cast<size_t>(n));
    ENGRAM_ASSIGN_OR_RETURN(void* staging, GetScratch(linear_scratch_, chunk * esize, kOp));
    const Elem dst = target == DType::kBF16 ? Elem::kBF16 : Elem::kF32;
    for (size_t off = 0; off < static_cast<size_t>(n); off += chunk) {
      const size_t cnt = std::min(chunk, static_cast<size_t>(n) - off);
      ENGRAM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging,
                                                  static_cast<const char*>(host.data) + off * esize,
                                                  cnt * esize, cudaMemcpyDefault, stream()));
      ENGRAM_CUDA_RETURN_IF_ERROR(
          LaunchConvert(staging, src, static_cast<char*>(dev.data) + off * DTypeSize(target), dst,
                        static_cast<int64_t>(cnt), stream()));
    }
  }
  // The caller may release the host weight once this returns.
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));
  return dev;
}

Status CudaBackend::CopyToHost(const Tensor& src, void* dst) {
  if (src.nbytes() == 0) return Status::Ok();
  if (src.data == nullptr || dst == nullptr) {
    return InvalidArgument("CopyToHost: null source or destination");
  }
  ENGRAM_RETURN_IF_ERROR(NotCapturing("CopyToHost"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst, src.data, src.nbytes(), cudaMemcpyDefault, stream()));
  return SyncAndCheck();
}

Status CudaBackend::CopyFromHost(const void* src, Tensor& dst) {
  if (dst.nbytes() == 0) return Status::Ok();
  ENGRAM_RETURN_IF_ERROR(CheckDevice(dst, "CopyFromHost", "dst"));
  if (src == nullptr) return InvalidArgument("CopyFromHost: null source");
  ENGRAM_RETURN_IF_ERROR(NotCapturing("CopyFromHost"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst.data, src, dst.nbytes(), cudaMemcpyDefault, stream()));
  // From pageable memory the copy has left `src` when the call returns; from pinned memory it
  // has not, so wait: the caller may reuse `src` at once.
  cudaPointerAttributes attr{};
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaPointerGetAttributes(&attr, src));
  if (attr.type == cudaMemoryTypeHost) {
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream()));
  }
  return Status::Ok();
}

Status CudaBackend::UploadLayout(BatchLayout& layout) {
  ENGRAM_RETURN_IF_ERROR(layout.Validate());
  // Never captured: the copy reads the pinned staging buffer of this step (two alternate).
  ENGRAM_RETURN_IF_ERROR(NotCapturing("UploadLayout"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  const int64_t T = layout.num_tokens(), S = layout.num_seqs();
  BatchLayout::DeviceArrays& d = layout.dev;
  struct Item {
    const std::vector<int32_t>* src;
    Tensor* dst;
    std::vector<int64_t> shape;
    size_t offset = 0;
  };
  Item items[] = {
      {&layout.token_ids, &d.token_ids, {T}},
      {&layout.positions, &d.positions, {T}},
      {&layout.seq_of_token, &d.seq_of_token, {T}},
      {&layout.slot_mapping, &d.slot_mapping, {T}},
      {&layout.seq_token_start, &d.seq_token_start, {S + 1}},
      {&layout.context_lens, &d.context_lens, {S}},
      {&layout.state_slots, &d.state_slots, {S}},
      {&layout.block_tables, &d.block_tables, {S, layout.max_blocks_per_seq}},
      {&layout.logit_rows, &d.logit_rows, {static_cast<int64_t>(layout.logit_rows.size())}},
  };
  // Offsets depend only on the arrays' lengths (T, S, max_blocks_per_seq, logit rows), so steps
  // of one shape put every array at the same device address (what a captured graph reads).
  size_t total = 0;
  for (Item& it : items) {
    it.offset = total;
    total += RoundUp(it.src->size() * sizeof(int32_t), 16);  // each array 16-byte aligned
  }
  total = std::max<size_t>(total, 16);

  // The slot used two steps ago may still be feeding its copy: wait for that copy only.
  Staging& st = staging_[next_staging_];
  next_staging_ ^= 1;
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(st.copied.get()));
  if (st.host.bytes() < total) {
    st.host = PinnedBuffer();
    ENGRAM_ASSIGN_OR_RETURN(st.host, AllocPinned(RoundUp(total * 2, 4096)));
  }
  auto* host = static_cast<char*>(st.host.data());
  for (const Item& it : items) {
    if (!it.src->empty()) {
      std::memcpy(host + it.offset, it.src->data(), it.src->size() * sizeof(int32_t));
    }
  }
  if (layout_dev_bytes_ < total) {
    // Layouts uploaded earlier keep the old buffer alive through their tensors' owner.
    const size_t bytes = RoundUp(total * 2, 4096);
    void* p = nullptr;
    ENGRAM_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes));
    layout_dev_ = std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
    layout_dev_bytes_ = bytes;
    ++epoch_;  // graphs captured over the old buffer must not run again
  }
  ENGRAM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(layout_dev_.get(), host, total, cudaMemcpyHostToDevice, stream()));
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaEventRecord(st.copied.get(), stream()));
  for (Item& it : items) {
    Tensor& t = *it.dst;
    t = Tensor();
    t.owner = layout_dev_;
    t.data = static_cast<char*>(layout_dev_.get()) + it.offset;
    t.dtype = DType::kI32;
    t.device = Device::kCuda;
    t.shape = std::move(it.shape);
  }
  return Status::Ok();
}

Status CudaBackend::Synchronize() {
  ENGRAM_RETURN_IF_ERROR(NotCapturing("Synchronize"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  return SyncAndCheck();
}

Result<Tensor> CudaBackend::AllocHostStaging(DType dtype, std::vector<int64_t> shape) {
  ENGRAM_RETURN_IF_ERROR(NotCapturing("AllocHostStaging"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  return AllocPinnedTensor(dtype, std::move(shape));
}

Status CudaBackend::RegisterHostMemory(void* ptr, size_t bytes) {
  ENGRAM_RETURN_IF_ERROR(NotCapturing("RegisterHostMemory"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  return RegisterHost(ptr, bytes, device_);
}

void CudaBackend::UnregisterHostMemory(void* ptr, size_t bytes) {
  const Status st = Activate();
  if (!st.ok()) {
    spdlog::warn("UnregisterHostMemory: {}; unregistering anyway", st.ToString());
    (void)cudaGetLastError();
  }
  UnregisterHost(ptr, bytes);
}

Result<std::unique_ptr<RowChannel>> CudaBackend::CreateRowChannel(int num_marks) {
  ENGRAM_RETURN_IF_ERROR(NotCapturing("CreateRowChannel"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  CudaRowChannel::Options o;
  o.device = device_;
  o.compute = stream();
  o.pageable_access = pageable_access_;
  o.error_word = error_dev_;
  o.num_marks = num_marks;
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<CudaRowChannel> ch, CudaRowChannel::Create(o));
  return std::unique_ptr<RowChannel>(std::move(ch));
}

Status CudaBackend::BeginCapture() {
  if (capturing_) return FailedPrecondition("BeginCapture: a capture is already in progress");
  ENGRAM_RETURN_IF_ERROR(Activate());
  // Thread-local: only this thread's unsafe calls (allocation, synchronization) break the
  // capture; the copy engine's thread may keep using its own stream meanwhile.
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
  return Status::Ok();
}

Result<std::unique_ptr<CapturedGraph>> CudaBackend::EndCapture() {
  if (!capturing_) return FailedPrecondition("EndCapture: no capture in progress");
  capturing_ = false;
  cudaGraph_t raw = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream(), &raw);
  const CudaGraph graph(raw);  // the recording; destroyed on every path (the exec is separate)
  if (ended != cudaSuccess) {
    // A call that broke the capture may have left its error for the next launch check.
    (void)cudaGetLastError();
    return CudaStatus(ended, "cudaStreamEndCapture", __FILE__, __LINE__);
  }
  if (raw == nullptr) return Internal("cudaStreamEndCapture returned no graph");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, raw, 0);
  CudaGraphExec owned(exec);
  if (inst != cudaSuccess) {
    (void)cudaGetLastError();
    return CudaStatus(inst, "cudaGraphInstantiate", __FILE__, __LINE__);
  }
  return std::unique_ptr<CapturedGraph>(new CudaCapturedGraph(std::move(owned), this, epoch_));
}

void CudaBackend::AbortCapture() {
  if (!capturing_) return;
  capturing_ = false;
  cudaGraph_t raw = nullptr;
  // Cleanup only: the op that failed reported the cause; an invalidated capture ends with an
  // error and no graph, which is what is wanted here.
  (void)cudaStreamEndCapture(stream(), &raw);
  if (raw != nullptr) (void)cudaGraphDestroy(raw);
  (void)cudaGetLastError();
}

Status CudaBackend::Replay(const CapturedGraph& graph) {
  ENGRAM_RETURN_IF_ERROR(NotCapturing("Replay"));
  const auto* g = dynamic_cast<const CudaCapturedGraph*>(&graph);
  if (g == nullptr || g->owner() != this) {
    return InvalidArgument("Replay: the graph was not captured by this backend");
  }
  if (g->epoch() != epoch_) {
    return FailedPrecondition(
        "Replay: the graph was captured at epoch {}, and a buffer it reads was reallocated since "
        "(epoch {})",
        g->epoch(), epoch_);
  }
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g->exec(), stream()));
  return Status::Ok();
}

}  // namespace cuda

Result<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options) {
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaBackend> b, cuda::CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(b));
}

CUstream_st* CudaComputeStream(const Backend& backend) {
  const auto* b = dynamic_cast<const cuda::CudaBackend*>(&backend);
  return b != nullptr ? b->stream() : nullptr;
}

}  // namespace engram
