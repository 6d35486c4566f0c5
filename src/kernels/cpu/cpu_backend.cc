#include "kernels/cpu/cpu_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/fp8.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_memory.h"
#include "kernels/cpu/cpu_row_channel.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/engram_ops.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/linear_fp8.h"
#include "kernels/cpu/linear_int8.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cpu/thread_pool.h"

namespace engram {
namespace {

constexpr int kMaxConvKernel = 16;

// ---- argument checks; every message starts with the op and names the operand

Status CheckHost(std::string_view op, std::string_view name, const Tensor& t) {
  if (t.device != Device::kCpu) {
    return InvalidArgument("{}: {} is not in host memory (the CPU backend reads host tensors)", op,
                           name);
  }
  if (t.data == nullptr && t.numel() != 0) return InvalidArgument("{}: {} has no data", op, name);
  for (int64_t d : t.shape) {
    if (d < 0)
      return InvalidArgument("{}: {} has a negative dimension {}", op, name, t.ShapeString());
  }
  return Status::Ok();
}

Status CheckDType(std::string_view op, std::string_view name, const Tensor& t, DType want) {
  ENGRAM_RETURN_IF_ERROR(CheckHost(op, name, t));
  if (t.dtype != want) {
    return InvalidArgument("{}: {} has dtype {}, expected {}", op, name, DTypeName(t.dtype),
                           DTypeName(want));
  }
  if (t.layout != Layout::kRowMajor) {
    return InvalidArgument("{}: {} has a backend-packed layout, expected row-major", op, name);
  }
  return Status::Ok();
}

Status CheckShape(std::string_view op, std::string_view name, const Tensor& t,
                  const std::vector<int64_t>& want) {
  if (t.shape != want) {
    return InvalidArgument("{}: {} has shape {}, expected [{}]", op, name, t.ShapeString(),
                           fmt::join(want, ", "));
  }
  return Status::Ok();
}

// An F32 row-major tensor of exactly `want`.
Status CheckF32(std::string_view op, std::string_view name, const Tensor& t,
                const std::vector<int64_t>& want) {
  ENGRAM_RETURN_IF_ERROR(CheckDType(op, name, t, DType::kF32));
  return CheckShape(op, name, t, want);
}

// An F32 row-major matrix [rows, cols] (rank 2).
Result<std::pair<int64_t, int64_t>> CheckF32Matrix(std::string_view op, std::string_view name,
                                                   const Tensor& t) {
  ENGRAM_RETURN_IF_ERROR(CheckDType(op, name, t, DType::kF32));
  if (t.shape.size() != 2) {
    return InvalidArgument("{}: {} has shape {}, expected a matrix [rows, columns]", op, name,
                           t.ShapeString());
  }
  return std::make_pair(t.dim(0), t.dim(1));
}

bool Overlap(const Tensor& a, const Tensor& b) {
  const char* a0 = static_cast<const char*>(a.data);
  const char* b0 = static_cast<const char*>(b.data);
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

Status CheckLayoutArrays(std::string_view op, const BatchLayout& l) {
  const size_t T = l.token_ids.size(), S = l.context_lens.size();
  if (l.positions.size() != T || l.seq_of_token.size() != T || l.slot_mapping.size() != T) {
    return InvalidArgument("{}: layout per-token arrays differ in length", op);
  }
  if (l.seq_token_start.size() != S + 1 || l.state_slots.size() != S ||
      l.block_tables.size() != S * static_cast<size_t>(std::max(l.max_blocks_per_seq, 0))) {
    return InvalidArgument("{}: layout per-sequence arrays do not match {} sequences", op, S);
  }
  for (size_t t = 0; t < T; ++t) {
    if (l.seq_of_token[t] < 0 || static_cast<size_t>(l.seq_of_token[t]) >= S) {
      return InvalidArgument("{}: layout.seq_of_token[{}] = {} outside [0, {})", op, t,
                             l.seq_of_token[t], S);
    }
    if (l.positions[t] < 0) {
      return InvalidArgument("{}: layout.positions[{}] = {} is negative", op, t, l.positions[t]);
    }
  }
  return Status::Ok();
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, CpuIsa isa, std::string weights)
      : pool_(threads), isa_(isa), weights_(std::move(weights)), int8_kernel_(Int8KernelFor(isa)) {
    name_ = weights_ == "int8"
                ? fmt::format("cpu ({} threads, {}, int8 weights: {} kernels)", pool_.num_threads(),
                              CpuIsaName(isa_), Int8KernelName(int8_kernel_))
                : fmt::format("cpu ({} threads, {})", pool_.num_threads(), CpuIsaName(isa_));
  }

  std::string_view name() const override { return name_; }
  Device device() const override { return Device::kCpu; }
  DType kv_dtype() const override { return DType::kF32; }

  // ---- memory

  Result<Tensor> Alloc(DType dtype, std::vector<int64_t> shape) override {
    return Allocate(dtype, std::move(shape), /*zero=*/false);
  }
  Result<Tensor> AllocZeros(DType dtype, std::vector<int64_t> shape) override {
    return Allocate(dtype, std::move(shape), /*zero=*/true);
  }

  Result<Tensor> PrepareLinear(const std::vector<LinearSource>& parts) override {
    bool all_fp8 = !parts.empty(), all_int8 = !parts.empty();
    for (const LinearSource& p : parts) {
      all_fp8 = all_fp8 && p.quantized() && p.w.dtype == DType::kF8E4M3;
      all_int8 = all_int8 && p.quantized() && p.w.dtype == DType::kI8;
    }
    if (all_int8 && weights_ != "bf16") {
      NoteLinearFormat("int8");
      return PackInt8LinearWeight(parts, pool_);
    }
    if (weights_ == "int8") {
      ENGRAM_ASSIGN_OR_RETURN(Tensor host, StackLinearSources(parts, DType::kF32));
      NoteLinearFormat("int8");
      return QuantizeLinearWeightInt8(host, pool_);
    }
    if (all_fp8 && weights_ == "auto") {
      NoteLinearFormat("fp8");
      return PackFp8LinearWeight(parts, pool_);
    }
    ENGRAM_ASSIGN_OR_RETURN(Tensor host, StackLinearSources(parts, DType::kBF16));
    NoteLinearFormat("bf16");
    return PackLinearWeight(host, pool_);
  }

  Result<Tensor> PrepareWeight(const Tensor& host, WeightUse use) override {
    constexpr std::string_view op = "PrepareWeight";
    ENGRAM_RETURN_IF_ERROR(CheckHost(op, "host", host));
    if (host.layout == Layout::kBackendPacked) {
      if (use == WeightUse::kLinear && host.shape.size() == 2 &&
          (host.dtype == DType::kF32 || host.dtype == DType::kBF16)) {
        return host;  // already ours
      }
      return InvalidArgument("{}: host has a backend-packed layout", op);
    }
    if (host.layout == Layout::kInt8Block32 || host.layout == Layout::kFp8Panels) {
      if (use == WeightUse::kLinear && host.shape.size() == 2 && host.dtype == DType::kU8) {
        return host;  // already ours
      }
      return InvalidArgument("{}: host has a quantized block layout but is not a [N, K] U8 {}", op,
                             "linear weight");
    }
    const bool float_type =
        host.dtype == DType::kF32 || host.dtype == DType::kBF16 || host.dtype == DType::kF16;
    // U8 [rows, Fp8RowBytes(Dh)]: an Engram table of packed FP8 rows (GatherRows reads it).
    const bool fp8_table = use == WeightUse::kEmbedding && host.dtype == DType::kU8;
    if (!float_type && !fp8_table) {
      return InvalidArgument("{}: host has dtype {}, expected F32, F16 or BF16{}", op,
                             DTypeName(host.dtype),
                             use == WeightUse::kEmbedding ? " (or U8 packed FP8 rows)" : "");
    }
    switch (use) {
      case WeightUse::kLinear:
        if (host.shape.size() != 2) {
          return InvalidArgument("{}: linear weight has shape {}, expected [N, K]", op,
                                 host.ShapeString());
        }
        if (weights_ == "int8") return QuantizeLinearWeightInt8(host, pool_);
        return PackLinearWeight(host, pool_);
      case WeightUse::kEmbedding:
        if (host.shape.size() != 2) {
          return InvalidArgument("{}: embedding table has shape {}, expected [rows, D]", op,
                                 host.ShapeString());
        }
        return host;  // aliased: tables may be multi-GB mappings
      case WeightUse::kVector: {
        if (host.dtype == DType::kF32) return host;
        ENGRAM_ASSIGN_OR_RETURN(Tensor t, Allocate(DType::kF32, host.shape, false));
        ConvertToF32(host.dtype, host.data, t.ptr<float>(), static_cast<size_t>(host.numel()));
        return t;
      }
    }
    return InvalidArgument("{}: unknown weight use", op);
  }

  Status CopyToHost(const Tensor& src, void* dst) override {
    ENGRAM_RETURN_IF_ERROR(CheckHost("CopyToHost", "src", src));
    if (dst == nullptr && src.nbytes() != 0) return InvalidArgument("CopyToHost: dst is null");
    if (src.nbytes() != 0) std::memcpy(dst, src.data, src.nbytes());
    return Status::Ok();
  }

  Status CopyFromHost(const void* src, Tensor& dst) override {
    ENGRAM_RETURN_IF_ERROR(CheckHost("CopyFromHost", "dst", dst));
    if (src == nullptr && dst.nbytes() != 0) return InvalidArgument("CopyFromHost: src is null");
    if (dst.nbytes() != 0) std::memcpy(dst.data, src, dst.nbytes());
    return Status::Ok();
  }

  Status UploadLayout(BatchLayout& l) override {
    auto view = [](std::vector<int32_t>& v) {
      return HostView(v.data(), DType::kI32, {static_cast<int64_t>(v.size())});
    };
    l.dev.token_ids = view(l.token_ids);
    l.dev.positions = view(l.positions);
    l.dev.seq_of_token = view(l.seq_of_token);
    l.dev.slot_mapping = view(l.slot_mapping);
    l.dev.seq_token_start = view(l.seq_token_start);
    l.dev.context_lens = view(l.context_lens);
    l.dev.state_slots = view(l.state_slots);
    l.dev.block_tables = view(l.block_tables);
    l.dev.logit_rows = view(l.logit_rows);
    return Status::Ok();
  }

  Status Synchronize() override { return Status::Ok(); }

  Result<Tensor> AllocHostStaging(DType dtype, std::vector<int64_t> shape) override {
    return HostTensor(dtype, std::move(shape));
  }
  // mlock keeps the pages resident (never swapped); the limit is RLIMIT_MEMLOCK.
  Status RegisterHostMemory(void* ptr, size_t bytes) override {
    if (ptr == nullptr || bytes == 0) return InvalidArgument("RegisterHostMemory: empty range");
    if (mlock(ptr, bytes) != 0) {
      const int err = errno;
      if (err == ENOMEM || err == EPERM || err == EAGAIN) {
        return ResourceExhausted(
            "mlock of {} bytes failed: {} (raise the memlock limit, e.g. ulimit -l or "
            "LimitMEMLOCK= in the systemd unit)",
            bytes, std::strerror(err));
      }
      return Unavailable("mlock of {} bytes failed: {}", bytes, std::strerror(err));
    }
    return Status::Ok();
  }
  void UnregisterHostMemory(void* ptr, size_t bytes) override { munlock(ptr, bytes); }
  Result<std::unique_ptr<RowChannel>> CreateRowChannel(int num_marks) override {
    if (num_marks <= 0) return InvalidArgument("CreateRowChannel: {} marks", num_marks);
    return std::unique_ptr<RowChannel>(std::make_unique<CpuRowChannel>(num_marks));
  }

  // ---- ops

  Status Embedding(const Tensor& table, const Tensor& ids, Tensor& out) override {
    constexpr std::string_view op = "Embedding";
    ENGRAM_RETURN_IF_ERROR(CheckTable(op, table));
    ENGRAM_RETURN_IF_ERROR(CheckDType(op, "ids", ids, DType::kI32));
    if (ids.shape.size() != 1) {
      return InvalidArgument("{}: ids has shape {}, expected [T]", op, ids.ShapeString());
    }
    const int64_t T = ids.dim(0), V = table.dim(0), D = table.dim(1);
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "out", out, {T, D}));
    const int32_t* id = ids.ptr<int32_t>();
    for (int64_t t = 0; t < T; ++t) {
      if (id[t] < 0 || id[t] >= V) {
        return InvalidArgument("{}: ids[{}] = {} outside [0, {})", op, t, id[t], V);
      }
    }
    GatherRowsToF32(isa_, pool_, table.data, table.dtype, D, id, T, out.ptr<float>());
    return Status::Ok();
  }

  Status RmsNorm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    constexpr std::string_view op = "RmsNorm";
    ENGRAM_ASSIGN_OR_RETURN(auto rd, CheckF32Matrix(op, "x", x));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "w", w, {rd.second}));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "out", out, x.shape));
    if (out.data != x.data && Overlap(out, x)) {
      return InvalidArgument("{}: out partially overlaps x", op);
    }
    RmsNormRows(isa_, pool_, x.ptr<float>(), w.ptr<float>(), eps, rd.first, rd.second,
                out.ptr<float>());
    return Status::Ok();
  }

  Status Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& out) override {
    constexpr std::string_view op = "Linear";
    ENGRAM_ASSIGN_OR_RETURN(auto mk, CheckF32Matrix(op, "x", x));
    ENGRAM_RETURN_IF_ERROR(CheckHost(op, "w", w));
    const bool packed = w.layout == Layout::kBackendPacked;
    const bool int8 = w.layout == Layout::kInt8Block32;
    const bool fp8 = w.layout == Layout::kFp8Panels;
    const bool dtype_ok = int8 || fp8 ? w.dtype == DType::kU8
                                      : w.dtype == DType::kF32 || w.dtype == DType::kBF16 ||
                                            (!packed && w.dtype == DType::kF16);
    if (!dtype_ok) {
      return InvalidArgument("{}: w has dtype {}, expected F32 or BF16 (prepared with kLinear)", op,
                             DTypeName(w.dtype));
    }
    if (w.shape.size() != 2 || w.dim(1) != mk.second) {
      return InvalidArgument("{}: w has shape {}, expected [N, {}] (K of x {})", op,
                             w.ShapeString(), mk.second, x.ShapeString());
    }
    const int64_t N = w.dim(0);
    if (bias != nullptr) ENGRAM_RETURN_IF_ERROR(CheckF32(op, "bias", *bias, {N}));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "out", out, {mk.first, N}));
    if (Overlap(out, x)) return InvalidArgument("{}: out overlaps x", op);
    if (int8) {
      LinearInt8Forward(int8_kernel_, pool_, x.ptr<float>(), mk.first, w,
                        bias != nullptr ? bias->ptr<float>() : nullptr, out.ptr<float>());
      return Status::Ok();
    }
    LinearForward(isa_, pool_, x.ptr<float>(), mk.first, w,
                  bias != nullptr ? bias->ptr<float>() : nullptr, out.ptr<float>());
    return Status::Ok();
  }

  Status Add(Tensor& x, const Tensor& y) override {
    constexpr std::string_view op = "Add";
    ENGRAM_RETURN_IF_ERROR(CheckDType(op, "x", x, DType::kF32));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "y", y, x.shape));
    AddInPlace(isa_, pool_, x.ptr<float>(), y.ptr<float>(), x.numel());
    return Status::Ok();
  }

  Status SwiGlu(const Tensor& gate_up, Tensor& out) override {
    constexpr std::string_view op = "SwiGlu";
    ENGRAM_ASSIGN_OR_RETURN(auto ti, CheckF32Matrix(op, "gate_up", gate_up));
    if (ti.second % 2 != 0) {
      return InvalidArgument("{}: gate_up has shape {}, expected [T, 2I]", op,
                             gate_up.ShapeString());
    }
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "out", out, {ti.first, ti.second / 2}));
    if (Overlap(out, gate_up)) return InvalidArgument("{}: out overlaps gate_up", op);
    SwiGluRows(isa_, pool_, gate_up.ptr<float>(), ti.first, ti.second / 2, out.ptr<float>());
    return Status::Ok();
  }

  Status Rope(Tensor& qkv, const BatchLayout& layout, const RopeParams& p) override {
    constexpr std::string_view op = "Rope";
    ENGRAM_RETURN_IF_ERROR(CheckHeads(op, p.num_q_heads, p.num_kv_heads, p.head_dim));
    if (p.head_dim % 2 != 0) {
      return InvalidArgument("{}: head_dim {} is odd", op, p.head_dim);
    }
    const int64_t T = layout.num_tokens();
    if (layout.positions.size() != static_cast<size_t>(T)) {
      return InvalidArgument("{}: layout has {} positions for {} tokens", op,
                             layout.positions.size(), T);
    }
    const int64_t row = static_cast<int64_t>(p.num_q_heads + 2 * p.num_kv_heads) * p.head_dim;
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "qkv", qkv, {T, row}));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "inv_freq", p.inv_freq, {p.head_dim / 2}));
    RopeInPlace(isa_, pool_, qkv.ptr<float>(), T, layout.positions.data(), p.num_q_heads,
                p.num_kv_heads, p.head_dim, p.inv_freq.ptr<float>());
    return Status::Ok();
  }

  Status PagedAttention(const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                        const BatchLayout& layout, const AttentionParams& p, Tensor& out) override {
    constexpr std::string_view op = "PagedAttention";
    ENGRAM_RETURN_IF_ERROR(CheckHeads(op, p.num_q_heads, p.num_kv_heads, p.head_dim));
    ENGRAM_RETURN_IF_ERROR(CheckLayoutArrays(op, layout));
    const int64_t T = layout.num_tokens();
    const int nq = p.num_q_heads, nkv = p.num_kv_heads, hd = p.head_dim;
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "qkv", qkv, {T, static_cast<int64_t>(nq + 2 * nkv) * hd}));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "out", out, {T, static_cast<int64_t>(nq) * hd}));
    if (Overlap(out, qkv)) return InvalidArgument("{}: out overlaps qkv", op);
    ENGRAM_RETURN_IF_ERROR(CheckDType(op, "k_cache", k_cache, kv_dtype()));
    if (k_cache.shape.size() != 4 || k_cache.dim(1) != layout.block_size || k_cache.dim(2) != nkv ||
        k_cache.dim(3) != hd) {
      return InvalidArgument("{}: k_cache has shape {}, expected [num_blocks, {}, {}, {}]", op,
                             k_cache.ShapeString(), layout.block_size, nkv, hd);
    }
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "v_cache", v_cache, k_cache.shape));
    const int64_t blocks = k_cache.dim(0), bs = layout.block_size;
    // Every cache index the kernel will touch must be inside the caches.
    std::vector<int32_t> max_pos(layout.num_seqs(), -1);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t s = layout.seq_of_token[t], pos = layout.positions[t];
      if (pos / bs >= layout.max_blocks_per_seq) {
        return InvalidArgument("{}: layout.positions[{}] = {} beyond the block table", op, t, pos);
      }
      if (layout.slot_mapping[t] < 0 || layout.slot_mapping[t] >= blocks * bs) {
        return InvalidArgument("{}: layout.slot_mapping[{}] = {} outside the cache ({} slots)", op,
                               t, layout.slot_mapping[t], blocks * bs);
      }
      max_pos[s] = std::max(max_pos[s], pos);
    }
    for (int32_t s = 0; s < layout.num_seqs(); ++s) {
      for (int64_t b = 0; b <= max_pos[s] / bs && max_pos[s] >= 0; ++b) {
        const int32_t blk = layout.block_tables[s * layout.max_blocks_per_seq + b];
        if (blk < 0 || blk >= blocks) {
          return InvalidArgument("{}: layout.block_tables[{}][{}] = {} outside [0, {})", op, s, b,
                                 blk, blocks);
        }
      }
    }
    PagedAttentionArgs a;
    a.qkv = qkv.ptr<float>();
    a.tokens = T;
    a.nq = nq;
    a.nkv = nkv;
    a.hd = hd;
    a.scale = p.scale;
    a.k_cache = k_cache.ptr<float>();
    a.v_cache = v_cache.ptr<float>();
    a.block_size = layout.block_size;
    a.positions = layout.positions.data();
    a.seq_of_token = layout.seq_of_token.data();
    a.slot_mapping = layout.slot_mapping.data();
    a.block_tables = layout.block_tables.data();
    a.max_blocks_per_seq = layout.max_blocks_per_seq;
    a.out = out.ptr<float>();
    engram::PagedAttention(isa_, pool_, a);
    return Status::Ok();
  }

  Status GatherRows(const Tensor& table, const Tensor& rows, Tensor& out) override {
    constexpr std::string_view op = "GatherRows";
    const bool fp8 = table.dtype == DType::kU8;  // packed FP8 rows (common/fp8.h)
    if (fp8) {
      ENGRAM_RETURN_IF_ERROR(CheckHost(op, "table", table));
      if (table.layout != Layout::kRowMajor || table.shape.size() != 2) {
        return InvalidArgument("{}: table has shape {}, expected a row-major [rows, bytes]", op,
                               table.ShapeString());
      }
    } else {
      ENGRAM_RETURN_IF_ERROR(CheckTable(op, table));
    }
    ENGRAM_RETURN_IF_ERROR(CheckDType(op, "rows", rows, DType::kI64));
    if (rows.shape.size() != 2) {
      return InvalidArgument("{}: rows has shape {}, expected [T, H]", op, rows.ShapeString());
    }
    const int64_t T = rows.dim(0), H = rows.dim(1), R = table.dim(0);
    int64_t Dh = table.dim(1);
    if (fp8) {
      // Dh comes from out: the table's row length is Dh codes plus Dh / 32 scales.
      ENGRAM_RETURN_IF_ERROR(CheckDType(op, "out", out, DType::kF32));
      if (out.shape.size() != 2 || out.dim(0) != T) {
        return InvalidArgument("{}: out has shape {}, expected [{}, H * Dh]", op, out.ShapeString(),
                               T);
      }
      if (H == 0) return CheckF32(op, "out", out, {T, 0});
      if (out.dim(1) % H != 0) {
        return InvalidArgument("{}: out has shape {}, expected [{}, H * Dh] with H = {}", op,
                               out.ShapeString(), T, H);
      }
      Dh = out.dim(1) / H;
      if (Dh % kFp8Block != 0) {
        return InvalidArgument(
            "{}: out has shape {}: Dh = {} is not a multiple of {} (FP8 rows have one scale per "
            "{} values)",
            op, out.ShapeString(), Dh, kFp8Block, kFp8Block);
      }
      if (table.dim(1) != static_cast<int64_t>(Fp8RowBytes(Dh))) {
        return InvalidArgument(
            "{}: table has shape {}, expected [rows, {}] (packed FP8 rows of Dh = {}: {} codes "
            "and {} scales)",
            op, table.ShapeString(), Fp8RowBytes(Dh), Dh, Dh, Dh / kFp8Block);
      }
    }
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "out", out, {T, H * Dh}));
    const int64_t* idx = rows.ptr<int64_t>();
    for (int64_t i = 0; i < T * H; ++i) {
      if (idx[i] < 0 || idx[i] >= R) {
        return InvalidArgument("{}: rows[{}][{}] = {} outside the table [0, {})", op, i / H, i % H,
                               idx[i], R);
      }
    }
    if (fp8) {
      GatherFp8RowsToF32(isa_, pool_, table.ptr<uint8_t>(), Dh, idx, T * H, out.ptr<float>());
    } else {
      GatherRowsToF32(isa_, pool_, table.data, table.dtype, Dh, idx, T * H, out.ptr<float>());
    }
    return Status::Ok();
  }

  Status EngramGate(const Tensor& k, const Tensor& h, const Tensor& w_key, const Tensor& w_query,
                    float eps, Tensor& v) override {
    constexpr std::string_view op = "EngramGate";
    ENGRAM_ASSIGN_OR_RETURN(auto td, CheckF32Matrix(op, "v", v));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "k", k, v.shape));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "h", h, v.shape));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "w_key", w_key, {td.second}));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "w_query", w_query, {td.second}));
    EngramGateRows(isa_, pool_, k.ptr<float>(), h.ptr<float>(), w_key.ptr<float>(),
                   w_query.ptr<float>(), eps, td.first, td.second, v.ptr<float>());
    return Status::Ok();
  }

  Status EngramShortConv(const Tensor& v, const Tensor& norm_w, const Tensor& conv_w,
                         const EngramConvParams& p, const BatchLayout& layout, Tensor& state,
                         Tensor& h) override {
    constexpr std::string_view op = "EngramShortConv";
    if (p.kernel_size < 1 || p.kernel_size > kMaxConvKernel || p.dilation < 1) {
      return InvalidArgument("{}: kernel_size {} (1..{}) or dilation {} (>= 1) out of range", op,
                             p.kernel_size, kMaxConvKernel, p.dilation);
    }
    ENGRAM_RETURN_IF_ERROR(CheckLayoutArrays(op, layout));
    const int64_t T = layout.num_tokens();
    ENGRAM_ASSIGN_OR_RETURN(auto td, CheckF32Matrix(op, "v", v));
    if (td.first != T) {
      return InvalidArgument("{}: v has shape {}, expected [{}, D] ({} tokens in the layout)", op,
                             v.ShapeString(), T, T);
    }
    const int64_t D = td.second, K = p.kernel_size;
    const int64_t W = (K - 1) * p.dilation;
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "h", h, v.shape));
    ENGRAM_RETURN_IF_ERROR(CheckF32(op, "norm_w", norm_w, {D}));
    ENGRAM_RETURN_IF_ERROR(CheckDType(op, "conv_w", conv_w, DType::kF32));
    const bool conv_shape_ok = conv_w.numel() == D * K && !conv_w.shape.empty() &&
                               conv_w.dim(0) == D && conv_w.dim(-1) == K &&
                               (conv_w.shape.size() == 2 || conv_w.shape.size() == 3);
    if (!conv_shape_ok) {
      return InvalidArgument("{}: conv_w has shape {}, expected [{}, {}] (or [{}, 1, {}])", op,
                             conv_w.ShapeString(), D, K, D, K);
    }
    ENGRAM_RETURN_IF_ERROR(CheckDType(op, "state", state, DType::kF32));
    if (state.shape.size() != 3 || state.dim(1) != W || state.dim(2) != D) {
      return InvalidArgument("{}: state has shape {}, expected [num_slots, {}, {}]", op,
                             state.ShapeString(), W, D);
    }
    if (Overlap(h, v)) return InvalidArgument("{}: h overlaps v", op);
    for (int32_t s = 0; s < layout.num_seqs(); ++s) {
      const int32_t b = layout.seq_token_start[s], e = layout.seq_token_start[s + 1];
      if (b < 0 || e <= b || e > T) {
        return InvalidArgument("{}: layout.seq_token_start[{}..{}] = [{}, {}) is not a token range",
                               op, s, s + 1, b, e);
      }
      if (layout.state_slots[s] < 0 || layout.state_slots[s] >= state.dim(0)) {
        return InvalidArgument("{}: layout.state_slots[{}] = {} outside [0, {})", op, s,
                               layout.state_slots[s], state.dim(0));
      }
      for (int32_t t = b; t < e; ++t) {
        if (layout.seq_of_token[t] != s || layout.positions[t] != layout.positions[b] + (t - b)) {
          return InvalidArgument(
              "{}: token {} breaks sequence {}'s run (seq_of_token {}, position {})", op, t, s,
              layout.seq_of_token[t], layout.positions[t]);
        }
      }
    }
    conv_x_.resize(static_cast<size_t>(T * D));
    conv_w_.resize(static_cast<size_t>(K * D));
    ShortConvArgs a;
    a.v = v.ptr<float>();
    a.norm_w = norm_w.ptr<float>();
    a.conv_w = conv_w.ptr<float>();
    a.kernel_size = p.kernel_size;
    a.dilation = p.dilation;
    a.eps = p.norm_eps;
    a.tokens = T;
    a.d = D;
    a.num_seqs = layout.num_seqs();
    a.positions = layout.positions.data();
    a.seq_of_token = layout.seq_of_token.data();
    a.seq_token_start = layout.seq_token_start.data();
    a.state_slots = layout.state_slots.data();
    a.state = state.ptr<float>();
    a.h = h.ptr<float>();
    a.x_scratch = conv_x_.data();
    a.w_scratch = conv_w_.data();
    engram::EngramShortConv(isa_, pool_, a);
    return Status::Ok();
  }

  Status ArgmaxRows(const Tensor& logits, Tensor& ids) override {
    constexpr std::string_view op = "ArgmaxRows";
    ENGRAM_ASSIGN_OR_RETURN(auto rv, CheckF32Matrix(op, "logits", logits));
    if (rv.second < 1) {
      return InvalidArgument("{}: logits has shape {}, expected at least one column", op,
                             logits.ShapeString());
    }
    ENGRAM_RETURN_IF_ERROR(CheckDType(op, "ids", ids, DType::kI32));
    ENGRAM_RETURN_IF_ERROR(CheckShape(op, "ids", ids, {rv.first}));
    ArgmaxRowsF32(pool_, logits.ptr<float>(), rv.first, rv.second, ids.ptr<int32_t>());
    return Status::Ok();
  }

 private:
  Result<Tensor> Allocate(DType dtype, std::vector<int64_t> shape, bool zero) {
    Tensor t;
    t.dtype = dtype;
    t.device = Device::kCpu;
    t.shape = std::move(shape);
    for (int64_t d : t.shape) {
      if (d < 0)
        return InvalidArgument("Alloc: shape {} has a negative dimension", t.ShapeString());
    }
    t.owner = AllocAligned(t.nbytes(), zero);
    if (t.owner == nullptr) {
      return ResourceExhausted("Alloc: cannot allocate {} bytes for {} {}", t.nbytes(),
                               DTypeName(dtype), t.ShapeString());
    }
    t.data = t.owner.get();
    return t;
  }

  static Status CheckTable(std::string_view op, const Tensor& table) {
    ENGRAM_RETURN_IF_ERROR(CheckHost(op, "table", table));
    if (table.dtype != DType::kF32 && table.dtype != DType::kBF16 && table.dtype != DType::kF16) {
      return InvalidArgument("{}: table has dtype {}, expected F32, BF16 or F16", op,
                             DTypeName(table.dtype));
    }
    if (table.layout != Layout::kRowMajor || table.shape.size() != 2) {
      return InvalidArgument("{}: table has shape {}, expected a row-major [rows, D]", op,
                             table.ShapeString());
    }
    return Status::Ok();
  }

  static Status CheckHeads(std::string_view op, int nq, int nkv, int hd) {
    if (nq <= 0 || nkv <= 0 || hd <= 0 || nq % nkv != 0) {
      return InvalidArgument("{}: heads nq={} nkv={} head_dim={} (need positive, nq % nkv == 0)",
                             op, nq, nkv, hd);
    }
    return Status::Ok();
  }

  ThreadPool pool_;
  CpuIsa isa_;
  std::string weights_;     // BackendOptions::weights: auto | bf16 | int8
  Int8Kernel int8_kernel_;  // the int8 kernels isa_ runs
  std::string name_;
  // Working memory of EngramShortConv, kept between calls (sized by the largest step).
  std::vector<float> conv_x_, conv_w_;
};

}  // namespace

Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options, CpuIsa isa) {
  if (options.threads < 0) {
    return InvalidArgument("cpu backend: threads = {} (expected >= 0; 0 = one per core)",
                           options.threads);
  }
  if (isa > BestCpuIsa()) {
    return Unavailable("cpu backend: this CPU cannot run the {} kernels (best: {})",
                       CpuIsaName(isa), CpuIsaName(BestCpuIsa()));
  }
  ENGRAM_RETURN_IF_ERROR(ValidateWeightFormat(options.weights));
  const int threads = options.threads > 0 ? options.threads : PhysicalCoreCount();
  return std::unique_ptr<Backend>(new CpuBackend(threads, isa, options.weights));
}

Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options) {
  return CreateCpuBackend(options, DefaultCpuIsa());
}

}  // namespace engram
