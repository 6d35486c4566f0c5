// CudaBackend ops: validation of every operand (INVALID_ARGUMENT naming it), then one launch
// (or cuBLAS call) on the compute stream. Kernels: elementwise.cu, norm.cu, attention.cu,
// engram.cu, sampling.cu.
#include <climits>
#include <cmath>
#include <vector>

#include "common/fp8.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_host_memory.h"

namespace engram::cuda {
namespace {

std::string ShapeOf(const std::vector<int64_t>& s) {
  Tensor t;
  t.shape = s;
  return t.ShapeString();
}

Status ExpectDType(const Tensor& t, DType want, const char* op, const char* name) {
  if (t.dtype != want) {
    return InvalidArgument("{}: {} has dtype {}, expected {}", op, name, DTypeName(t.dtype),
                           DTypeName(want));
  }
  return Status::Ok();
}

Status ExpectShape(const Tensor& t, const std::vector<int64_t>& want, const char* op,
                   const char* name) {
  if (t.shape != want) {
    return InvalidArgument("{}: {} has shape {}, expected {}", op, name, t.ShapeString(),
                           ShapeOf(want));
  }
  return Status::Ok();
}

Status ExpectRank(const Tensor& t, size_t rank, const char* op, const char* name) {
  if (t.shape.size() != rank) {
    return InvalidArgument("{}: {} has shape {}, expected rank {}", op, name, t.ShapeString(),
                           rank);
  }
  return Status::Ok();
}

// A vector operand: F32 with exactly n elements (any shape, e.g. [n] or [1, n]).
Status ExpectVector(const Tensor& t, int64_t n, const char* op, const char* name) {
  ENGRAM_RETURN_IF_ERROR(ExpectDType(t, DType::kF32, op, name));
  if (t.numel() != n) {
    return InvalidArgument("{}: {} has shape {}, expected {} elements", op, name, t.ShapeString(),
                           n);
  }
  return Status::Ok();
}

// The layout's device arrays were filled by this backend's UploadLayout for `tokens` tokens.
Status ExpectUploaded(const BatchLayout& layout, int64_t tokens, const char* op) {
  const BatchLayout::DeviceArrays& d = layout.dev;
  if (d.positions.device != Device::kCuda || d.positions.data == nullptr ||
      d.block_tables.device != Device::kCuda) {
    return InvalidArgument(
        "{}: the layout's device arrays are not on the GPU (call "
        "UploadLayout on this backend first)",
        op);
  }
  if (d.positions.numel() != tokens || layout.num_tokens() != tokens) {
    return InvalidArgument("{}: the layout has {} tokens ({} uploaded), the operands {}", op,
                           layout.num_tokens(), d.positions.numel(), tokens);
  }
  return Status::Ok();
}

}  // namespace

Status CudaBackend::Embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  constexpr const char* kOp = "Embedding";
  ENGRAM_RETURN_IF_ERROR(CheckDevice(table, kOp, "table"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(ids, kOp, "ids"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(out, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(table, 2, kOp, "table"));
  ENGRAM_ASSIGN_OR_RETURN(const Elem table_type, ToElem(table.dtype, kOp, "table"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(ids, DType::kI32, kOp, "ids"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(ids, 1, kOp, "ids"));
  const int64_t T = ids.dim(0), D = table.dim(1);
  ENGRAM_RETURN_IF_ERROR(ExpectDType(out, DType::kF32, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(out, {T, D}, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  // Ids live on the device: one outside [0, V) is reported by the next Synchronize.
  return LaunchStatus(LaunchEmbedding(table.data, table_type, table.dim(0), D, ids.ptr<int32_t>(),
                                      T, out.ptr<float>(), error_dev_, stream()),
                      kOp);
}

Status CudaBackend::RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  constexpr const char* kOp = "RmsNorm";
  ENGRAM_RETURN_IF_ERROR(CheckDevice(x, kOp, "x"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(w, kOp, "w"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(out, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(x, DType::kF32, kOp, "x"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(x, 2, kOp, "x"));
  const int64_t R = x.dim(0), D = x.dim(1);
  ENGRAM_RETURN_IF_ERROR(ExpectVector(w, D, kOp, "w"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(out, DType::kF32, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(out, x.shape, kOp, "out"));
  if (R > INT_MAX) return InvalidArgument("{}: {} rows exceed the grid", kOp, R);
  ENGRAM_RETURN_IF_ERROR(Activate());
  return LaunchStatus(
      LaunchRmsNorm(x.ptr<float>(), w.ptr<float>(), eps, R, D, out.ptr<float>(), stream()), kOp);
}

Status CudaBackend::Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) {
  constexpr const char* kOp = "Linear";
  ENGRAM_RETURN_IF_ERROR(CheckDevice(x, kOp, "x"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(w, kOp, "w"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(out, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(x, DType::kF32, kOp, "x"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(x, 2, kOp, "x"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(w, 2, kOp, "w"));
  const bool fp8 = w.layout == Layout::kFp8Block128;  // from PrepareLinear (cuda_fp8.cc)
  const bool int8 = w.layout == Layout::kInt8Rows32;  // from PrepareLinear (cuda_int8.cc)
  if (fp8) {
    ENGRAM_RETURN_IF_ERROR(ExpectDType(w, DType::kU8, kOp, "w (FP8 blocks)"));
  } else if (int8) {
    ENGRAM_RETURN_IF_ERROR(ExpectDType(w, DType::kU8, kOp, "w (int8 blocks)"));
  } else if (w.dtype != DType::kBF16 && w.dtype != DType::kF32) {
    return InvalidArgument("{}: w has dtype {}, expected BF16 (from PrepareWeight) or F32", kOp,
                           DTypeName(w.dtype));
  } else if (w.layout != Layout::kRowMajor) {
    return InvalidArgument("{}: w must be row-major", kOp);
  }
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  if (w.dim(1) != K) {
    return InvalidArgument("{}: w has shape {}, expected [N, {}] for x {}", kOp, w.ShapeString(), K,
                           x.ShapeString());
  }
  ENGRAM_RETURN_IF_ERROR(ExpectDType(out, DType::kF32, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(out, {M, N}, kOp, "out"));
  if (bias != nullptr) {
    ENGRAM_RETURN_IF_ERROR(CheckDevice(*bias, kOp, "bias"));
    ENGRAM_RETURN_IF_ERROR(ExpectVector(*bias, N, kOp, "bias"));
  }
  if (out.data == x.data) return InvalidArgument("{}: out must not alias x", kOp);
  if (M > INT_MAX || N > INT_MAX || K > INT_MAX) {
    return InvalidArgument("{}: dimensions {}x{}x{} exceed cuBLAS's int range", kOp, M, N, K);
  }
  if (M == 0 || N == 0) return Status::Ok();
  ENGRAM_RETURN_IF_ERROR(Activate());
  if (fp8 || int8) {
    ENGRAM_RETURN_IF_ERROR(fp8 ? LinearFp8(x, w, out) : LinearInt8(x, w, out));
    if (bias != nullptr) {
      ENGRAM_RETURN_IF_ERROR(LaunchStatus(
          LaunchAddBias(out.ptr<float>(), bias->ptr<float>(), M, N, stream()), "Linear (bias)"));
    }
    return Status::Ok();
  }

  // Row-major out[M,N] = x[M,K]·W[N,K]ᵀ is column-major outᵀ[N,M] = W[N,K]·xᵀ: cuBLAS sees W
  // as a K×N column-major matrix (transposed) and x as K×M (not transposed).
  const float alpha = 1.f, beta = 0.f;
  const void* xb = x.data;
  cudaDataType_t type = CUDA_R_32F;
  if (w.dtype == DType::kBF16) {
    ENGRAM_ASSIGN_OR_RETURN(void* scratch,
                            GetScratch(linear_scratch_, static_cast<size_t>(M * K) * 2, kOp));
    ENGRAM_RETURN_IF_ERROR(
        LaunchStatus(LaunchConvert(x.data, Elem::kF32, scratch, Elem::kBF16, M * K, stream()),
                     "Linear (x to BF16)"));
    xb = scratch;
    type = CUDA_R_16BF;
  }
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  ENGRAM_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
      cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, w.data, type, k, xb, type, k, &beta,
      out.data, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  if (bias != nullptr) {
    ENGRAM_RETURN_IF_ERROR(LaunchStatus(
        LaunchAddBias(out.ptr<float>(), bias->ptr<float>(), M, N, stream()), "Linear (bias)"));
  }
  return Status::Ok();
}

Status CudaBackend::Add(Tensor& x, const Tensor& y) {
  constexpr const char* kOp = "Add";
  ENGRAM_RETURN_IF_ERROR(CheckDevice(x, kOp, "x"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(y, kOp, "y"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(x, DType::kF32, kOp, "x"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(y, DType::kF32, kOp, "y"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(y, x.shape, kOp, "y"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  return LaunchStatus(LaunchAdd(x.ptr<float>(), y.ptr<float>(), x.numel(), stream()), kOp);
}

Status CudaBackend::SwiGlu(const Tensor& gate_up, Tensor& out) {
  constexpr const char* kOp = "SwiGlu";
  ENGRAM_RETURN_IF_ERROR(CheckDevice(gate_up, kOp, "gate_up"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(out, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(gate_up, DType::kF32, kOp, "gate_up"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(gate_up, 2, kOp, "gate_up"));
  if (gate_up.dim(1) % 2 != 0) {
    return InvalidArgument("{}: gate_up has shape {}, expected an even last dimension", kOp,
                           gate_up.ShapeString());
  }
  const int64_t T = gate_up.dim(0), I = gate_up.dim(1) / 2;
  ENGRAM_RETURN_IF_ERROR(ExpectDType(out, DType::kF32, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(out, {T, I}, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  return LaunchStatus(LaunchSwiGlu(gate_up.ptr<float>(), T, I, out.ptr<float>(), stream()), kOp);
}

Status CudaBackend::Rope(Tensor& qkv, const BatchLayout& layout, const RopeParams& p) {
  constexpr const char* kOp = "Rope";
  if (p.num_q_heads <= 0 || p.num_kv_heads <= 0 || p.head_dim <= 0 || p.head_dim % 2 != 0) {
    return InvalidArgument("{}: heads {}/{} and head_dim {} must be positive, head_dim even", kOp,
                           p.num_q_heads, p.num_kv_heads, p.head_dim);
  }
  ENGRAM_RETURN_IF_ERROR(CheckDevice(qkv, kOp, "qkv"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(p.inv_freq, kOp, "inv_freq"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(qkv, DType::kF32, kOp, "qkv"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(qkv, 2, kOp, "qkv"));
  const int64_t T = qkv.dim(0);
  ENGRAM_RETURN_IF_ERROR(
      ExpectShape(qkv, {T, int64_t{p.num_q_heads + 2 * p.num_kv_heads} * p.head_dim}, kOp, "qkv"));
  ENGRAM_RETURN_IF_ERROR(ExpectVector(p.inv_freq, p.head_dim / 2, kOp, "inv_freq"));
  ENGRAM_RETURN_IF_ERROR(ExpectUploaded(layout, T, kOp));
  ENGRAM_RETURN_IF_ERROR(Activate());
  return LaunchStatus(
      LaunchRope(qkv.ptr<float>(), T, p.num_q_heads, p.num_kv_heads, p.head_dim,
                 layout.dev.positions.ptr<int32_t>(), p.inv_freq.ptr<float>(), stream()),
      kOp);
}

Status CudaBackend::PagedAttention(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                                   const BatchLayout& layout, const AttentionParams& p,
                                   Tensor& out) {
  constexpr const char* kOp = "PagedAttention";
  if (p.num_q_heads <= 0 || p.num_kv_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0) {
    return InvalidArgument("{}: num_q_heads {} must be a positive multiple of num_kv_heads {}", kOp,
                           p.num_q_heads, p.num_kv_heads);
  }
  if (p.head_dim <= 0 || p.head_dim > kMaxAttentionHeadDim) {
    return InvalidArgument("{}: head_dim {} outside [1, {}]", kOp, p.head_dim,
                           kMaxAttentionHeadDim);
  }
  ENGRAM_RETURN_IF_ERROR(CheckDevice(qkv, kOp, "qkv"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(k_cache, kOp, "k_cache"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(v_cache, kOp, "v_cache"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(out, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(qkv, DType::kF32, kOp, "qkv"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(qkv, 2, kOp, "qkv"));
  const int64_t T = qkv.dim(0), hd = p.head_dim;
  ENGRAM_RETURN_IF_ERROR(
      ExpectShape(qkv, {T, (p.num_q_heads + 2 * p.num_kv_heads) * hd}, kOp, "qkv"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(k_cache, kv_dtype(), kOp, "k_cache"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(k_cache, 4, kOp, "k_cache"));
  const int64_t blocks = k_cache.dim(0);
  ENGRAM_RETURN_IF_ERROR(
      ExpectShape(k_cache, {blocks, layout.block_size, p.num_kv_heads, hd}, kOp, "k_cache"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(v_cache, kv_dtype(), kOp, "v_cache"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(v_cache, k_cache.shape, kOp, "v_cache"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(out, DType::kF32, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(out, {T, p.num_q_heads * hd}, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectUploaded(layout, T, kOp));
  if (T > INT_MAX) return InvalidArgument("{}: {} tokens exceed the grid", kOp, T);
  ENGRAM_RETURN_IF_ERROR(Activate());
  PagedAttentionArgs a;
  a.qkv = qkv.ptr<float>();
  a.k_cache = k_cache.ptr<float>();
  a.v_cache = v_cache.ptr<float>();
  a.out = out.ptr<float>();
  a.positions = layout.dev.positions.ptr<int32_t>();
  a.seq_of_token = layout.dev.seq_of_token.ptr<int32_t>();
  a.slot_mapping = layout.dev.slot_mapping.ptr<int32_t>();
  a.block_tables = layout.dev.block_tables.ptr<int32_t>();
  a.num_tokens = T;
  a.num_blocks = blocks;
  a.max_blocks_per_seq = layout.max_blocks_per_seq;
  a.block_size = layout.block_size;
  a.num_q_heads = p.num_q_heads;
  a.num_kv_heads = p.num_kv_heads;
  a.head_dim = p.head_dim;
  a.scale = p.scale;
  a.err = error_dev_;
  return LaunchStatus(LaunchPagedAttention(a, stream()), kOp);
}

Status CudaBackend::GatherRows(const Tensor& table, const Tensor& rows, Tensor& out) {
  constexpr const char* kOp = "GatherRows";
  ENGRAM_RETURN_IF_ERROR(ExpectRank(table, 2, kOp, "table"));
  // Tables keep their dtype on the device (the resident tier's PrepareWeight and the copy
  // engine's arena alike); rows are widened to F32 here. U8 tables hold packed FP8 rows
  // (common/fp8.h), dequantized in the same kernel.
  const bool fp8 = table.dtype == DType::kU8;
  Elem table_type = Elem::kF32;
  if (!fp8) {
    ENGRAM_ASSIGN_OR_RETURN(table_type, ToElem(table.dtype, kOp, "table"));
  }
  ENGRAM_RETURN_IF_ERROR(CheckDevice(rows, kOp, "rows"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(out, kOp, "out"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(rows, DType::kI64, kOp, "rows"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(rows, 2, kOp, "rows"));
  const int64_t T = rows.dim(0), H = rows.dim(1);
  int64_t Dh = table.dim(1);
  ENGRAM_RETURN_IF_ERROR(ExpectDType(out, DType::kF32, kOp, "out"));
  if (fp8) {
    // Dh comes from out: a table row is Dh codes and Dh / 32 scales.
    ENGRAM_RETURN_IF_ERROR(ExpectRank(out, 2, kOp, "out"));
    if (out.dim(0) != T || (H > 0 && out.dim(1) % H != 0)) {
      return InvalidArgument("{}: out has shape {}, expected [{}, H * Dh] with H = {}", kOp,
                             out.ShapeString(), T, H);
    }
    Dh = H > 0 ? out.dim(1) / H : 0;
    if (Dh % kFp8Block != 0) {
      return InvalidArgument(
          "{}: out has shape {}: Dh = {} is not a multiple of {} (FP8 rows have one scale per "
          "{} values)",
          kOp, out.ShapeString(), Dh, kFp8Block, kFp8Block);
    }
    if (H > 0 && table.dim(1) != static_cast<int64_t>(Fp8RowBytes(Dh))) {
      return InvalidArgument(
          "{}: table has shape {}, expected [rows, {}] (packed FP8 rows of Dh = {}: {} codes "
          "and {} scales)",
          kOp, table.ShapeString(), Fp8RowBytes(Dh), Dh, Dh, Dh / kFp8Block);
    }
  }
  ENGRAM_RETURN_IF_ERROR(ExpectShape(out, {T, H * Dh}, kOp, "out"));
  // The device must be current before asking where a host table is mapped for it.
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_ASSIGN_OR_RETURN(const void* src,
                          DeviceReadableAddress(table, device_, pageable_access_, kOp, "table"));
  if (fp8) {
    return LaunchStatus(LaunchGatherFp8Rows(src, table.dim(0), Dh, rows.ptr<int64_t>(), T * H,
                                            out.ptr<float>(), error_dev_, stream()),
                        kOp);
  }
  return LaunchStatus(LaunchGatherRows(src, table_type, table.dim(0), Dh, rows.ptr<int64_t>(),
                                       T * H, out.ptr<float>(), error_dev_, stream()),
                      kOp);
}

Status CudaBackend::EngramGate(const Tensor& k, const Tensor& h, const Tensor& w_key,
                               const Tensor& w_query, float eps, Tensor& v) {
  constexpr const char* kOp = "EngramGate";
  ENGRAM_RETURN_IF_ERROR(CheckDevice(k, kOp, "k"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(h, kOp, "h"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(w_key, kOp, "w_key"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(w_query, kOp, "w_query"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(v, kOp, "v"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(k, DType::kF32, kOp, "k"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(k, 2, kOp, "k"));
  const int64_t T = k.dim(0), D = k.dim(1);
  ENGRAM_RETURN_IF_ERROR(ExpectDType(h, DType::kF32, kOp, "h"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(h, k.shape, kOp, "h"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(v, DType::kF32, kOp, "v"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(v, k.shape, kOp, "v"));
  ENGRAM_RETURN_IF_ERROR(ExpectVector(w_key, D, kOp, "w_key"));
  ENGRAM_RETURN_IF_ERROR(ExpectVector(w_query, D, kOp, "w_query"));
  if (T > INT_MAX) return InvalidArgument("{}: {} tokens exceed the grid", kOp, T);
  ENGRAM_RETURN_IF_ERROR(Activate());
  return LaunchStatus(LaunchEngramGate(k.ptr<float>(), h.ptr<float>(), w_key.ptr<float>(),
                                       w_query.ptr<float>(), eps, T, D, v.ptr<float>(), stream()),
                      kOp);
}

Status CudaBackend::EngramShortConv(const Tensor& v, const Tensor& norm_w, const Tensor& conv_w,
                                    const EngramConvParams& p, const BatchLayout& layout,
                                    Tensor& state, Tensor& h) {
  constexpr const char* kOp = "EngramShortConv";
  if (p.kernel_size < 1 || p.dilation < 1) {
    return InvalidArgument("{}: kernel_size {} and dilation {} must be >= 1", kOp, p.kernel_size,
                           p.dilation);
  }
  ENGRAM_RETURN_IF_ERROR(CheckDevice(v, kOp, "v"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(norm_w, kOp, "norm_w"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(conv_w, kOp, "conv_w"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(state, kOp, "state"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(h, kOp, "h"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(v, DType::kF32, kOp, "v"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(v, 2, kOp, "v"));
  const int64_t T = v.dim(0), D = v.dim(1);
  const int64_t window = int64_t{p.kernel_size - 1} * p.dilation;
  ENGRAM_RETURN_IF_ERROR(ExpectVector(norm_w, D, kOp, "norm_w"));
  ENGRAM_RETURN_IF_ERROR(ExpectVector(conv_w, D * p.kernel_size, kOp, "conv_w"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(state, DType::kF32, kOp, "state"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(state, 3, kOp, "state"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(state, {state.dim(0), window, D}, kOp, "state"));
  ENGRAM_RETURN_IF_ERROR(ExpectDType(h, DType::kF32, kOp, "h"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(h, v.shape, kOp, "h"));
  ENGRAM_RETURN_IF_ERROR(ExpectUploaded(layout, T, kOp));
  if (T > INT_MAX) return InvalidArgument("{}: {} tokens exceed the grid", kOp, T);
  if (T == 0) return Status::Ok();
  ENGRAM_RETURN_IF_ERROR(Activate());
  ENGRAM_ASSIGN_OR_RETURN(void* inv, GetScratch(conv_scratch_, static_cast<size_t>(T) * 4, kOp));
  ShortConvArgs a;
  a.v = v.ptr<float>();
  a.norm_w = norm_w.ptr<float>();
  a.conv_w = conv_w.ptr<float>();
  a.state = state.ptr<float>();
  a.h = h.ptr<float>();
  a.inv_rms = static_cast<float*>(inv);
  a.positions = layout.dev.positions.ptr<int32_t>();
  a.seq_of_token = layout.dev.seq_of_token.ptr<int32_t>();
  a.seq_token_start = layout.dev.seq_token_start.ptr<int32_t>();
  a.context_lens = layout.dev.context_lens.ptr<int32_t>();
  a.state_slots = layout.dev.state_slots.ptr<int32_t>();
  a.num_tokens = T;
  a.dim = D;
  a.num_state_slots = state.dim(0);
  a.kernel_size = p.kernel_size;
  a.dilation = p.dilation;
  a.norm_eps = p.norm_eps;
  a.err = error_dev_;
  return LaunchStatus(LaunchShortConv(a, stream()), kOp);
}

Status CudaBackend::ArgmaxRows(const Tensor& logits, Tensor& ids) {
  constexpr const char* kOp = "ArgmaxRows";
  ENGRAM_RETURN_IF_ERROR(ExpectDType(logits, DType::kF32, kOp, "logits"));
  ENGRAM_RETURN_IF_ERROR(ExpectRank(logits, 2, kOp, "logits"));
  const int64_t R = logits.dim(0), V = logits.dim(1);
  if (V < 1 || V > INT_MAX) {
    return InvalidArgument("{}: logits has shape {}, expected [R, V] with 1 <= V <= {}", kOp,
                           logits.ShapeString(), INT_MAX);
  }
  if (logits.layout != Layout::kRowMajor) {
    return InvalidArgument("{}: logits must be row-major", kOp);
  }
  ENGRAM_RETURN_IF_ERROR(ExpectDType(ids, DType::kI32, kOp, "ids"));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(ids, {R}, kOp, "ids"));
  if (R > INT_MAX) return InvalidArgument("{}: {} rows exceed the grid", kOp, R);
  if (R == 0) {  // nothing to launch; empty tensors may come without memory
    if (logits.device != Device::kCuda || ids.device != Device::kCuda) {
      return InvalidArgument("{}: {} is not a CUDA device tensor", kOp,
                             logits.device != Device::kCuda ? "logits" : "ids");
    }
    return Status::Ok();
  }
  ENGRAM_RETURN_IF_ERROR(CheckDevice(logits, kOp, "logits"));
  ENGRAM_RETURN_IF_ERROR(CheckDevice(ids, kOp, "ids"));
  ENGRAM_RETURN_IF_ERROR(Activate());
  return LaunchStatus(LaunchArgmaxRows(logits.ptr<float>(), R, V, ids.ptr<int32_t>(), stream()),
                      kOp);
}

}  // namespace engram::cuda
