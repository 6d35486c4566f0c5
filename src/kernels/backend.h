// Backend: the compute device behind the model. The model composes these ops; nothing
// outside src/kernels knows which backend runs. All activations are F32, row-major, with the
// token as the first dimension. Weights are prepared once by PrepareWeight.
//
// Thread safety: a Backend is used by one engine thread at a time. Ops are issued in order
// and may complete asynchronously (CUDA); CopyToHost and Synchronize wait for them.
// Every op validates shapes and dtypes and returns INVALID_ARGUMENT naming the operand.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "kernels/batch_layout.h"
#include "kernels/row_channel.h"
#include "kernels/tensor.h"

namespace engram {

enum class WeightUse : uint8_t {
  kLinear,     // [N, K] matrix used as x · Wᵀ; may be repacked (Layout::kBackendPacked) or,
               // with BackendOptions::weights = "int8", quantized (Layout::kInt8Block32)
  kEmbedding,  // [rows, D] table read by row (Embedding, GatherRows)
  kVector,     // small vectors and matrices read elementwise (norms, biases, conv); kept F32
};

// One part of a Linear weight as the model files hold it: a float weight (F32/F16/BF16, no
// scale_inv), or a quantized one (a model's quantization_config): q F8_E4M3 or I8 [N, K] whose
// dequantized value is q[n, k] * scale_inv[n / block_n, k / block_k], scale_inv F32 (or BF16)
// [ceil(N / block_n), ceil(K / block_k)]. Host tensors; `name` (the file's tensor name) is for
// messages.
struct LinearSource {
  Tensor w;
  Tensor scale_inv;
  int64_t block_n = 0;
  int64_t block_k = 0;
  std::string name;

  bool quantized() const { return !scale_inv.empty(); }
};

// The parts stacked along N as one host tensor: float parts of one dtype stay in it, anything
// else (mixed dtypes, quantized parts dequantized) becomes `dequantized` (F32 or BF16).
// INVALID_ARGUMENT naming the part when a part is malformed (shapes, dtypes, K differs).
Result<Tensor> StackLinearSources(const std::vector<LinearSource>& parts, DType dequantized);

struct RopeParams {
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  Tensor inv_freq;  // F32 [head_dim / 2] on the backend's device (llama3 scaling applied)
};

struct AttentionParams {
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float scale = 0.f;  // usually 1/sqrt(head_dim)
};

// Parameters of one Engram layer's conv (hc_mult = 1).
struct EngramConvParams {
  int kernel_size = 4;  // K
  int dilation = 3;     // N (max n-gram size)
  float norm_eps = 1e-5f;
};

// Work recorded by Backend::EndCapture and run by Backend::Replay (CUDA: an instantiated CUDA
// graph). Opaque; owned by the caller, and must not outlive the backend that made it.
class CapturedGraph {
 public:
  virtual ~CapturedGraph() = default;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual Device device() const = 0;
  // Element type this backend keeps the KV cache in (F32 on CPU).
  virtual DType kv_dtype() const = 0;
  // The device's PCI bus id ("0000:3b:00.0"), for NUMA placement of host memory near it;
  // empty for the CPU backend.
  virtual std::string pci_bus_id() const { return ""; }

  // ---- memory
  // Uninitialized tensor on this backend's device.
  virtual Result<Tensor> Alloc(DType dtype, std::vector<int64_t> shape) = 0;
  // Zero-filled tensor on this backend's device.
  virtual Result<Tensor> AllocZeros(DType dtype, std::vector<int64_t> shape) = 0;
  // Makes a host weight (CPU memory, e.g. an mmap of a safetensors file, F32/F16/BF16) usable
  // by the ops. The CPU backend may alias `host` (the caller keeps it alive through
  // host.owner); other backends copy. The result may differ in dtype and layout.
  virtual Result<Tensor> PrepareWeight(const Tensor& host, WeightUse use) = 0;
  // A kLinear weight whose rows are the parts' rows in order (fused q/k/v, gate/up, or one
  // part), in the format BackendOptions::weights asks for. Quantized parts run in their own
  // format where the backend has kernels for it ("auto"); this default stacks the parts,
  // dequantizing quantized ones to BF16 (StackLinearSources), and calls PrepareWeight.
  virtual Result<Tensor> PrepareLinear(const std::vector<LinearSource>& parts);
  // The format the Linear weights prepared so far run in: "bf16" (F32/F16/BF16 weights),
  // "int8", "fp8", or "mixed"; "" before any.
  virtual std::string linear_format() const { return linear_format_; }
  // Copies all of `src` (a device tensor) into host memory at dst (src.nbytes() bytes).
  virtual Status CopyToHost(const Tensor& src, void* dst) = 0;
  // Copies dst.nbytes() bytes from host memory at src into the device tensor dst.
  virtual Status CopyFromHost(const void* src, Tensor& dst) = 0;
  // Fills layout.dev with device copies (or views) of the layout's host arrays.
  virtual Status UploadLayout(BatchLayout& layout) = 0;
  // Waits for all issued work.
  virtual Status Synchronize() = 0;

  // ---- host memory the device reads (Engram tiers, staging) and the copy path
  // A CPU tensor for staging rows to this device: pinned (page-locked) on CUDA, so copies from
  // it are asynchronous DMA; plain aligned host memory on the CPU backend.
  virtual Result<Tensor> AllocHostStaging(DType dtype, std::vector<int64_t> shape) = 0;
  // Pins [ptr, ptr + bytes) (page-aligned host memory the caller owns and keeps alive until
  // UnregisterHostMemory). CUDA: cudaHostRegister, portable and mapped, so DMA from it is
  // asynchronous and GatherRows / RowChannel::Gather may read it in place (zero-copy).
  // CPU: mlock, so the pages stay resident. RESOURCE_EXHAUSTED or UNAVAILABLE naming the cause
  // when the OS or driver refuses; the memory stays usable, unpinned (callers log it).
  virtual Status RegisterHostMemory(void* ptr, size_t bytes) = 0;
  virtual void UnregisterHostMemory(void* ptr, size_t bytes) = 0;
  // A channel for the prefetch copy thread (row_channel.h) with marks [0, num_marks).
  virtual Result<std::unique_ptr<RowChannel>> CreateRowChannel(int num_marks) = 0;

  // ---- ops (shapes: T tokens, D hidden, ...)
  // out[t,:] = table[ids[t],:]. table [V, D] prepared with kEmbedding (or any F32 activation);
  // ids I32 [T] on device; out F32 [T, D]. Ids outside [0, V) are INVALID_ARGUMENT where the
  // backend can check before launching (callers validate ids anyway).
  virtual Status Embedding(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  // out[r,:] = x[r,:] * rsqrt(mean(x[r,:]^2) + eps) * w. x, out F32 [R, D]; w [D]. out may be x.
  virtual Status RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
  // out[M, N] = x[M, K] · Wᵀ (+ bias[N]); w prepared with kLinear; F32 accumulation.
  virtual Status Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) = 0;
  // x += y (F32, same shape).
  virtual Status Add(Tensor& x, const Tensor& y) = 0;
  // out[t, i] = silu(gate_up[t, i]) * gate_up[t, I + i]; gate_up F32 [T, 2I], out F32 [T, I].
  virtual Status SwiGlu(const Tensor& gate_up, Tensor& out) = 0;
  // Rotary embedding in place on the q and k parts of qkv F32 [T, (nq + 2 nkv) * hd]
  // (q heads, then k heads, then v heads), Hugging Face rotate_half convention, angle
  // positions[t] * inv_freq[i] computed in F32.
  virtual Status Rope(Tensor& qkv, const BatchLayout& layout, const RopeParams& p) = 0;
  // Writes this step's k and v (from qkv) into the paged caches at layout.slot_mapping, then
  // out[t] = softmax(q_t · K[0..positions[t]]ᵀ * scale) · V for each q head (GQA: q head h
  // reads kv head h / (nq / nkv)). k_cache, v_cache: [num_blocks, block_size, nkv, hd] of
  // kv_dtype(). out F32 [T, nq * hd].
  virtual Status PagedAttention(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                                const BatchLayout& layout, const AttentionParams& p,
                                Tensor& out) = 0;

  // ---- Engram module ops
  // out[t, h*Dh : (h+1)*Dh] = table[rows[t, h], :] widened to F32. table [R, Dh] of F32, F16 or
  // BF16, or U8 [R, Fp8RowBytes(Dh)] holding packed FP8 rows (common/fp8.h: Dh E4M3 codes then
  // Dh/32 E8M0 scales, dequantized here), Dh = out.dim(1) / H; prepared with kEmbedding or host
  // memory the device can read. rows I64 [T, H] absolute row numbers; out F32 [T, H * Dh].
  virtual Status GatherRows(const Tensor& table, const Tensor& rows, Tensor& out) = 0;
  // Per token t: g = <RmsNorm(k[t]) * w_key, RmsNorm(h[t]) * w_query> / sqrt(D);
  // g = sign(g) * sqrt(max(|g|, 1e-6)); v[t] *= sigmoid(g). k, h, v F32 [T, D]; eps for both
  // norms.
  virtual Status EngramGate(const Tensor& k, const Tensor& h, const Tensor& w_key,
                            const Tensor& w_query, float eps, Tensor& v) = 0;
  // With x = RmsNorm(v) * norm_w (eps p.norm_eps) per token:
  // y[t, c] = sum_{i<K} conv_w[c, i] * x(pos_t - (K-1-i) * dilation, c), where x at a position
  // before this step's chunk of the sequence comes from `state` and before 0 is zero;
  // h[t] += v[t] + silu(y[t]). Afterwards state holds x of the sequence's last (K-1)*dilation
  // positions. state F32 [num_state_slots, (K-1)*dilation, D], a ring indexed by position mod
  // (K-1)*dilation, row layout.state_slots[s]. conv_w F32 [D, K]. With conv disabled the model
  // adds v itself and does not call this.
  virtual Status EngramShortConv(const Tensor& v, const Tensor& norm_w, const Tensor& conv_w,
                                 const EngramConvParams& p, const BatchLayout& layout,
                                 Tensor& state, Tensor& h) = 0;

  // ---- sampling
  // Greedy sampling on the device: ids[r] = the index of the largest value of logits row r, the
  // lowest index among equal values (-0 equals +0). logits F32 [R, V] with V >= 1; ids I32 [R];
  // R may be 0. A row holding a NaN, or whose largest value is +inf or -inf, gives -1 (the
  // engine ends that request: overflowed weights or activations). That is exactly
  // engram::GreedyToken in model/sampler.h, so the two agree on every row.
  virtual Status ArgmaxRows(const Tensor& logits, Tensor& ids) = 0;

  // ---- captured work (CUDA graphs); optional: the defaults answer UNIMPLEMENTED (CPU).
  // Between BeginCapture and EndCapture the ops the calling thread issues are recorded, not
  // run (CUDA: capture of the compute stream in cudaStreamCaptureModeThreadLocal), together with
  // everything fixed at issue time: operand addresses and the host-side sizes of every launch.
  // A replay runs the same kernels over the same addresses with the values they hold then.
  // While capturing, whatever would allocate or synchronize (Alloc, copies, UploadLayout,
  // Synchronize, a per-op scratch buffer that would have to grow) is FAILED_PRECONDITION; so
  // run a shape eagerly once before capturing it.
  virtual Status BeginCapture() { return Unimplemented("{}: no graph capture", name()); }
  // Ends the capture and instantiates what was recorded. On an error (an op broke the capture,
  // instantiation failed) nothing is kept and the backend is ready for eager ops again.
  virtual Result<std::unique_ptr<CapturedGraph>> EndCapture() {
    return Unimplemented("{}: no graph capture", name());
  }
  // Ends a capture whose ops failed, discarding the recording; a no-op without a capture.
  virtual void AbortCapture() {}
  // Runs a graph this backend captured, asynchronously like any op. FAILED_PRECONDITION when
  // capture_epoch() changed since it was captured (a buffer it reads was reallocated).
  virtual Status Replay(const CapturedGraph& graph) {
    (void)graph;
    return Unimplemented("{}: no graph capture", name());
  }
  // Increases whenever the backend reallocates memory its ops use internally (the layout's
  // device buffer, per-op scratch): graphs captured under an earlier epoch would read freed
  // memory and must be dropped.
  virtual uint64_t capture_epoch() const { return 0; }

 protected:
  // Records the format of one more prepared Linear weight (for linear_format()).
  void NoteLinearFormat(std::string_view format);

 private:
  std::string linear_format_;
};

struct BackendOptions {
  std::string kind = "cpu";  // "cpu" or "cuda"
  int threads = 0;           // CPU compute threads; 0 = one per physical core
  int device_index = 0;      // CUDA device
  // CUDA: the Engine runs decode steps as CUDA graphs through BeginCapture/Replay (captured
  // once per step shape, then replayed; src/kernels/cuda/NOTES.md). Off until verified on a
  // GPU; ignored with the CPU backend.
  bool cuda_graphs = false;
  // Format of the Linear weights (WeightUse::kLinear, the lm_head included):
  //  - "auto": as the model files store them: F32/F16/BF16 weights as they are (packed),
  //    quantized ones (config.json quantization_config) in their own format where the backend
  //    has kernels for it (CPU: fp8 and int8; CUDA: int8, and fp8 on Hopper), else dequantized
  //    to BF16 at load;
  //  - "bf16": F32/F16/BF16 weights as they are, quantized ones dequantized to BF16;
  //  - "int8": symmetric int8 in blocks of 32 inputs with an F32 scale per block and output
  //    row, the activations quantized per token and block on the fly (Layout::kInt8Block32):
  //    float weights are quantized at load, int8 files are used as they are, FP8 files are
  //    dequantized and requantized (CUDA: on the device, by the same rounding rule).
  // Embeddings and vectors are never quantized.
  std::string weights = "auto";
};

// INVALID_ARGUMENT unless `weights` is a format BackendOptions::weights accepts
// (auto, bf16, int8).
Status ValidateWeightFormat(std::string_view weights);

// Creates the backend named by options.kind; UNAVAILABLE when it is not built or no device
// is visible, INVALID_ARGUMENT for an unknown kind.
Result<std::unique_ptr<Backend>> CreateBackend(const BackendOptions& options);

}  // namespace engram
