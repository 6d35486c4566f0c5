// Engram module kernels: the row gather from the (device or host-mapped) Engram table (F32,
// F16, BF16, or packed FP8 rows dequantized in the same pass) and the short causal depthwise
// conv with its per-sequence ring state.
#include "kernels/cuda/device_utils.cuh"

namespace engram::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float QuietNan() { return __int_as_float(0x7fc00000); }

// One thread per 16-byte chunk of a table row: F32 rows move 4 floats, BF16 rows 8 values
// widened to F32 (two 16-byte stores). Needs row_dim*elem % 16 == 0 and aligned pointers.
template <bool kBf16>
__global__ void GatherRowsVecKernel(const void* table, int64_t table_rows, int64_t row_dim,
                                    const int64_t* rows, int64_t n_rows, float* out,
                                    uint32_t* err) {
  constexpr int kPerChunk = kBf16 ? 8 : 4;
  const int64_t chunks = row_dim / kPerChunk;
  const int64_t n = n_rows * chunks;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / chunks, c = i - r * chunks;
    const int64_t src_row = rows[r];
    float4* o = reinterpret_cast<float4*>(out + r * row_dim + c * kPerChunk);
    if (src_row < 0 || src_row >= table_rows) {
      if (c == 0) FlagError(err, kErrTableRow);
      const float q = QuietNan();
      o[0] = make_float4(q, q, q, q);
      if (kBf16) o[1] = make_float4(q, q, q, q);
      continue;
    }
    const uint4 raw =
        reinterpret_cast<const uint4*>(static_cast<const char*>(table))[src_row * chunks + c];
    if constexpr (kBf16) {
      // Each 32-bit word holds two BF16 values, low half first; a BF16 widens by shifting.
      const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
      float f[8];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        f[2 * k] = __uint_as_float(w[k] << 16);
        f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
      }
      o[0] = make_float4(f[0], f[1], f[2], f[3]);
      o[1] = make_float4(f[4], f[5], f[6], f[7]);
    } else {
      o[0] = make_float4(__uint_as_float(raw.x), __uint_as_float(raw.y), __uint_as_float(raw.z),
                         __uint_as_float(raw.w));
    }
  }
}

__global__ void GatherRowsKernel(const void* table, Elem table_type, int64_t table_rows,
                                 int64_t row_dim, const int64_t* rows, int64_t n_rows, float* out,
                                 uint32_t* err) {
  const int64_t n = n_rows * row_dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / row_dim, c = i - r * row_dim;
    const int64_t src_row = rows[r];
    if (src_row < 0 || src_row >= table_rows) {
      if (c == 0) FlagError(err, kErrTableRow);
      out[i] = QuietNan();
      continue;
    }
    out[i] = LoadAsFloat(table, src_row * row_dim + c, table_type);
  }
}

// ---- packed FP8 rows (common/fp8.h): Dh E4M3 codes, then Dh / 32 E8M0 scales

// The E4M3 value of code c (an exact F32; NaN codes give the quiet NaN of their sign), built
// without F32 subnormals. (Only the product with the scale 0 = 2^-127, an F32 subnormal, needs
// denormals honoured; nvcc keeps them unless -ftz=true / --use_fast_math.)
__device__ __forceinline__ float E4M3Value(uint32_t c) {
  const uint32_t sign = (c & 0x80u) << 24;
  const uint32_t em = c & 0x7fu;
  if (em == 0x7fu) return __uint_as_float(sign | 0x7fc00000u);
  const float mag = em < 8u ? static_cast<float>(em) * 0.001953125f  // M * 2^-9
                            : __uint_as_float((em << 20) + (120u << 23));
  return __uint_as_float(__float_as_uint(mag) | sign);
}

// 2^(e - 127); 0xFF is NaN; 0 is 2^-127, an F32 subnormal.
__device__ __forceinline__ float E8M0Value(uint32_t e) {
  return __uint_as_float(e == 0xffu ? 0x7fc00000u : e == 0u ? 0x00400000u : e << 23);
}

// One thread per sizeof(V) consecutive codes of a row (V = uint2, uint32_t, uint16_t or
// uint8_t: the widest the row size and the table's address allow): it reads its codes and its
// block's scale byte from the table row, decodes, and writes the F32 values. Consecutive
// threads take consecutive codes, so a warp reads a row's codes as one contiguous span (and its
// scales as one more), once: the gather and the dequantization are one pass over the bytes,
// which matters most when the table is mapped host memory read over the bus. `table` is not
// __restrict__ (plain coherent loads, as in row_copy.cu). Each value is e4m3 * e8m0 in F32,
// exact or inf, so the result is bitwise the host's DequantFp8Row (NaNs aside).
template <typename V>
__global__ void GatherFp8RowsKernel(const uint8_t* table, int64_t table_rows, int64_t dh,
                                    int64_t row_bytes, const int64_t* __restrict__ rows,
                                    int64_t n_rows, float* __restrict__ out, bool vec_out,
                                    uint32_t* err) {
  constexpr int kVec = static_cast<int>(sizeof(V));
  const int64_t chunks = dh / kVec;
  const int64_t n = n_rows * chunks;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / chunks, c = i - r * chunks;
    const int64_t src_row = rows[r];
    float f[kVec];
    if (src_row < 0 || src_row >= table_rows) {
      if (c == 0) FlagError(err, kErrTableRow);
#pragma unroll
      for (int k = 0; k < kVec; ++k) f[k] = QuietNan();
    } else {
      const uint8_t* row = table + src_row * row_bytes;
      const V codes = *reinterpret_cast<const V*>(row + c * kVec);
      // kVec divides 32: a thread's codes share one block and its scale.
      const float scale = E8M0Value(row[dh + (c * kVec) / 32]);
      uint8_t b[kVec];
      memcpy(b, &codes, kVec);
#pragma unroll
      for (int k = 0; k < kVec; ++k) f[k] = E4M3Value(b[k]) * scale;
    }
    float* o = out + r * dh + c * kVec;
    if constexpr (kVec >= 4) {
      if (vec_out) {
#pragma unroll
        for (int k = 0; k < kVec; k += 4) {
          *reinterpret_cast<float4*>(o + k) = make_float4(f[k], f[k + 1], f[k + 2], f[k + 3]);
        }
        continue;
      }
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) o[k] = f[k];
  }
}

// The normalized conv input x = RmsNorm(v) * norm_w of one element. Always computed by this
// one expression, so values kept in the state equal values recomputed in a whole prefill.
__device__ __forceinline__ float NormVal(float v, float inv_rms, float w) {
  return v * inv_rms * w;
}

// One thread per (token, channel): y = Σ_i conv_w[c, i] · x(pos - (K-1-i)·dilation, c), where x
// of an earlier position of this step's chunk is recomputed from v and x of a position before
// the chunk comes from the state ring; then h += v + silu(y).
__global__ void ShortConvKernel(ShortConvArgs a) {
  const int64_t n = a.num_tokens * a.dim;
  const int window = (a.kernel_size - 1) * a.dilation;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / a.dim, c = i - t * a.dim;
    const int s = a.seq_of_token[t];
    const int64_t first = a.seq_token_start[s];
    const int pos0 = a.positions[first];
    const int pos = a.positions[t];
    const int64_t slot = a.state_slots[s];
    const bool slot_ok = slot >= 0 && slot < a.num_state_slots;
    if (!slot_ok && c == 0) FlagError(a.err, kErrStateSlot);
    const float w = a.norm_w[c];
    float y = 0.f;
    for (int k = 0; k < a.kernel_size; ++k) {
      const int q = pos - (a.kernel_size - 1 - k) * a.dilation;
      if (q < 0) continue;
      float x;
      if (q >= pos0) {
        const int64_t tq = first + (q - pos0);
        x = NormVal(a.v[tq * a.dim + c], a.inv_rms[tq], w);
      } else {
        x = slot_ok ? a.state[(slot * window + q % window) * a.dim + c] : 0.f;
      }
      y += a.conv_w[c * a.kernel_size + k] * x;
    }
    a.h[i] += a.v[i] + Silu(y);
  }
}

// After the conv: the ring keeps x of each sequence's last `window` positions.
__global__ void StateWriteKernel(ShortConvArgs a) {
  const int64_t n = a.num_tokens * a.dim;
  const int window = (a.kernel_size - 1) * a.dilation;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / a.dim, c = i - t * a.dim;
    const int s = a.seq_of_token[t];
    const int pos = a.positions[t];
    const int64_t slot = a.state_slots[s];
    if (pos < a.context_lens[s] - window || slot < 0 || slot >= a.num_state_slots) continue;
    a.state[(slot * window + pos % window) * a.dim + c] =
        NormVal(a.v[i], a.inv_rms[t], a.norm_w[c]);
  }
}

}  // namespace

cudaError_t LaunchGatherRows(const void* table, Elem table_type, int64_t table_rows,
                             int64_t row_dim, const int64_t* rows, int64_t n_rows, float* out,
                             uint32_t* err, cudaStream_t stream) {
  if (n_rows == 0 || row_dim == 0) return cudaSuccess;
  const bool aligned = Aligned16(table) && Aligned16(out);
  if (aligned && table_type == Elem::kBF16 && row_dim % 8 == 0) {
    GatherRowsVecKernel<true><<<GridFor(n_rows * row_dim / 8, kThreads), kThreads, 0, stream>>>(
        table, table_rows, row_dim, rows, n_rows, out, err);
  } else if (aligned && table_type == Elem::kF32 && row_dim % 4 == 0) {
    GatherRowsVecKernel<false><<<GridFor(n_rows * row_dim / 4, kThreads), kThreads, 0, stream>>>(
        table, table_rows, row_dim, rows, n_rows, out, err);
  } else {
    GatherRowsKernel<<<GridFor(n_rows * row_dim, kThreads), kThreads, 0, stream>>>(
        table, table_type, table_rows, row_dim, rows, n_rows, out, err);
  }
  return cudaGetLastError();
}

cudaError_t LaunchGatherFp8Rows(const void* table, int64_t table_rows, int64_t dh,
                                const int64_t* rows, int64_t n_rows, float* out, uint32_t* err,
                                cudaStream_t stream) {
  if (n_rows == 0 || dh == 0) return cudaSuccess;
  const int64_t row_bytes = dh + dh / 32;
  const uintptr_t bits = reinterpret_cast<uintptr_t>(table) | static_cast<uintptr_t>(row_bytes);
  // Rows start on a multiple of the vector when both the base and the row size are.
  const bool vec_out = Aligned16(out);  // then every row and chunk of out is (dh % 32 == 0)
  const auto* t = static_cast<const uint8_t*>(table);
  auto launch = [&](auto v) {
    using V = decltype(v);
    const int64_t threads = n_rows * (dh / static_cast<int64_t>(sizeof(V)));
    GatherFp8RowsKernel<V><<<GridFor(threads, kThreads), kThreads, 0, stream>>>(
        t, table_rows, dh, row_bytes, rows, n_rows, out, vec_out, err);
    return cudaGetLastError();
  };
  if ((bits & 7u) == 0) return launch(uint2{});
  if ((bits & 3u) == 0) return launch(uint32_t{});
  if ((bits & 1u) == 0) return launch(uint16_t{});
  return launch(uint8_t{});
}

cudaError_t LaunchShortConv(const ShortConvArgs& a, cudaStream_t stream) {
  const int64_t n = a.num_tokens * a.dim;
  if (n == 0) return cudaSuccess;
  cudaError_t e = LaunchInvRms(a.v, a.norm_eps, a.num_tokens, a.dim, a.inv_rms, stream);
  if (e != cudaSuccess) return e;
  ShortConvKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(a);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  if (a.kernel_size > 1) {
    StateWriteKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(a);
    e = cudaGetLastError();
  }
  return e;
}

}  // namespace engram::cuda
