// Launchers of the CUDA backend's kernels (internal to src/kernels/cuda). Each enqueues its
// kernel(s) on `stream` and returns the launch error (cudaSuccess when enqueued); none
// synchronizes. Arguments are trusted: CudaBackend validates shapes and dtypes first.
// All tensors are row-major and contiguous; sizes are element counts.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace engram::cuda {

// Element types the kernels read (a subset of engram::DType, kept free of common/ so the
// .cu files need only CUDA headers).
enum class Elem : uint8_t { kF32, kF16, kBF16 };

// Bits kernels store into the backend's error word (mapped pinned host memory) when they
// meet an index they cannot use; the element in question is written as NaN or skipped.
enum KernelError : uint32_t {
  kErrTokenId = 1u,      // Embedding: id outside [0, V)
  kErrTableRow = 2u,     // GatherRows: row outside [0, R)
  kErrKvSlot = 4u,       // PagedAttention: slot or block outside the cache
  kErrStateSlot = 8u,    // EngramShortConv: state slot outside the state tensor
  kErrChannelRow = 16u,  // RowChannel Gather/Scatter: row or slot outside its tensor
};

// ---- elementwise.cu
// A no-op kernel: fails with cudaErrorNoKernelImageForDevice when the binary has no code
// for this GPU.
cudaError_t LaunchProbe(cudaStream_t stream);
// dst[i] = src[i] converted (round to nearest even for BF16). dst is F32 or BF16.
cudaError_t LaunchConvert(const void* src, Elem src_type, void* dst, Elem dst_type, int64_t n,
                          cudaStream_t stream);
// out[t, :] = table[ids[t], :] (F32 or BF16 table).
cudaError_t LaunchEmbedding(const void* table, Elem table_type, int64_t vocab, int64_t dim,
                            const int32_t* ids, int64_t tokens, float* out, uint32_t* err,
                            cudaStream_t stream);
// x[i] += y[i].
cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);
// out[r, c] += bias[c].
cudaError_t LaunchAddBias(float* out, const float* bias, int64_t rows, int64_t cols,
                          cudaStream_t stream);
// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i].
cudaError_t LaunchSwiGlu(const float* gate_up, int64_t tokens, int64_t inter, float* out,
                         cudaStream_t stream);
// Rotates the nq q heads and nkv k heads of each qkv row in place (HF rotate_half).
cudaError_t LaunchRope(float* qkv, int64_t tokens, int nq, int nkv, int head_dim,
                       const int32_t* positions, const float* inv_freq, cudaStream_t stream);

// ---- norm.cu
// out[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w; out may equal x.
cudaError_t LaunchRmsNorm(const float* x, const float* w, float eps, int64_t rows, int64_t dim,
                          float* out, cudaStream_t stream);
// inv[r] = rsqrt(mean(x[r, :]^2) + eps).
cudaError_t LaunchInvRms(const float* x, float eps, int64_t rows, int64_t dim, float* inv,
                         cudaStream_t stream);
// The Engram gate (backend.h EngramGate): v[t, :] *= sigmoid(g(k[t], h[t])).
cudaError_t LaunchEngramGate(const float* k, const float* h, const float* w_key,
                             const float* w_query, float eps, int64_t tokens, int64_t dim, float* v,
                             cudaStream_t stream);

// ---- attention.cu
struct PagedAttentionArgs {
  const float* qkv = nullptr;  // [T, (nq + 2 nkv) * hd]
  float* k_cache = nullptr;    // [num_blocks, block_size, nkv, hd]
  float* v_cache = nullptr;
  float* out = nullptr;  // [T, nq * hd]
  const int32_t* positions = nullptr;
  const int32_t* seq_of_token = nullptr;
  const int32_t* slot_mapping = nullptr;
  const int32_t* block_tables = nullptr;  // [S, max_blocks_per_seq]
  int64_t num_tokens = 0;
  int64_t num_blocks = 0;
  int max_blocks_per_seq = 0;
  int block_size = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // <= kMaxAttentionHeadDim
  float scale = 0.f;
  uint32_t* err = nullptr;
};
inline constexpr int kMaxAttentionHeadDim = 256;
// Writes the step's k and v into the caches, then computes the attention output.
cudaError_t LaunchPagedAttention(const PagedAttentionArgs& a, cudaStream_t stream);

// ---- engram.cu
// out[r, :] = table[rows[r], :] as F32 for r < n_rows (table F32 or BF16, in device memory or
// mapped host memory).
cudaError_t LaunchGatherRows(const void* table, Elem table_type, int64_t table_rows,
                             int64_t row_dim, const int64_t* rows, int64_t n_rows, float* out,
                             uint32_t* err, cudaStream_t stream);
// out[r, :] = the packed FP8 row table[rows[r]] (dh E4M3 codes, then dh / 32 E8M0 scales;
// dh + dh / 32 bytes; dh a multiple of 32) dequantized to F32: e4m3 * 2^(e8m0 - 127), bitwise
// the host's DequantFp8Row except for NaN sign/payload. table may be device memory or mapped
// host memory (read in place, once). A row outside [0, table_rows) is written as NaN and sets
// kErrTableRow.
cudaError_t LaunchGatherFp8Rows(const void* table, int64_t table_rows, int64_t dh,
                                const int64_t* rows, int64_t n_rows, float* out, uint32_t* err,
                                cudaStream_t stream);

struct ShortConvArgs {
  const float* v = nullptr;       // [T, D]
  const float* norm_w = nullptr;  // [D]
  const float* conv_w = nullptr;  // [D, K]
  float* state = nullptr;         // [num_state_slots, (K-1)*dilation, D]
  float* h = nullptr;             // [T, D]
  float* inv_rms = nullptr;       // scratch [T]
  const int32_t* positions = nullptr;
  const int32_t* seq_of_token = nullptr;
  const int32_t* seq_token_start = nullptr;
  const int32_t* context_lens = nullptr;
  const int32_t* state_slots = nullptr;
  int64_t num_tokens = 0;
  int64_t dim = 0;
  int64_t num_state_slots = 0;
  int kernel_size = 0;
  int dilation = 0;
  float norm_eps = 0.f;
  uint32_t* err = nullptr;
};
cudaError_t LaunchShortConv(const ShortConvArgs& a, cudaStream_t stream);

// ---- sampling.cu
// ids[r] = the index of the largest value of logits row r (F32 [rows, vocab], 1 <= vocab <=
// INT_MAX): ties to the lowest index, NaN skipped except that a row starting with NaN gives 0
// (Backend::ArgmaxRows). One block per row.
cudaError_t LaunchArgmaxRows(const float* logits, int64_t rows, int64_t vocab, int32_t* ids,
                             cudaStream_t stream);

// ---- row_copy.cu (RowChannel: raw row moves on the copy stream, any element type)
// Rows are row_bytes bytes, copied with the widest of 16/8/4/2/1-byte accesses that row_bytes
// and both base pointers allow.
// dst row i = table row rows[i], for i < n. table may be device memory or mapped host memory
// (read in place over the bus). A row outside [0, table_rows) is written as zeros and sets
// kErrChannelRow.
cudaError_t LaunchGatherRowBytes(const void* table, int64_t table_rows, int64_t row_bytes,
                                 const int64_t* rows, int64_t n, void* dst, uint32_t* err,
                                 cudaStream_t stream);
// dst row slots[i] = src row i, for i < n (slots distinct). A slot outside [0, dst_rows) is
// skipped and sets kErrChannelRow.
cudaError_t LaunchScatterRowBytes(const void* src, int64_t row_bytes, const int64_t* slots,
                                  int64_t n, void* dst, int64_t dst_rows, uint32_t* err,
                                  cudaStream_t stream);

// ---- fp8_quant.cu
// Per token and 128-input block: scale = amax / 448, q = E4M3(x / scale) with saturation
// (round to nearest even). x [m, k] F32; q [m, k] E4M3 codes; scales F32 [ceil(k / 128), m],
// the token index fastest (cuBLASLt's VEC128_32F layout of the B operand).
cudaError_t LaunchQuantizeFp8Act(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales,
                                 cudaStream_t stream);
// out_bf16[n, k] = code x block scale of a Layout::kFp8Block128 weight (fp8_linear.h) whose
// scales start at byte scale_offset; the products round to BF16 (nearest even).
cudaError_t LaunchDequantFp8Block128(const void* w, size_t scale_offset, int64_t n, int64_t k,
                                     void* out_bf16, cudaStream_t stream);

// ---- int8_linear.cu (int8_linear.h)
// Per row and 32-input block of x [m, k] F32: scale = amax / 127, q = round-to-nearest-even(
// x * (127 / amax)) clamped to [-127, 127] (common/int8_block.h, bit for bit); an all-zero
// block gets scale 0. q int8 [m, ldq] (ldq = whole blocks, the padding zeroed); scales F32
// [m, ceil(k / 32)] row-major.
cudaError_t LaunchQuantizeInt8Rows(const float* x, int64_t m, int64_t k, int8_t* q, int64_t ldq,
                                   float* scales, cudaStream_t stream);
// out[t, n] (F32, row stride ldo) = sum_b ws[n, b] xs[t, b] sum_{c in b} w[n, c] xq[t, c] for
// t < m <= 16: w, ws a Layout::kInt8Rows32 weight [n, k] (codes, then scales at scale_offset),
// xq, xs from LaunchQuantizeInt8Rows.
cudaError_t LaunchInt8Gemv(const void* w, size_t scale_offset, int64_t n, int64_t k,
                           const int8_t* xq, const float* xs, int64_t m, float* out, int64_t ldo,
                           cudaStream_t stream);
// out_bf16[n, k] (row-major, unpadded) = code x scale of a Layout::kInt8Rows32 weight, rounded
// to BF16 (nearest even).
cudaError_t LaunchDequantInt8Rows(const void* w, size_t scale_offset, int64_t n, int64_t k,
                                  void* out_bf16, cudaStream_t stream);

}  // namespace engram::cuda
