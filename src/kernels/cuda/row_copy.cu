// RowChannel kernels: raw row gathers and scatters on the copy stream. Rows are moved as bytes
// (any element type), one thread per vector of V bytes: consecutive threads read consecutive
// vectors of a row and then of the next row, so a warp's loads are coalesced whether rows are
// small (a warp covers several rows) or large (several warps per row). That matters most when
// the table is mapped host memory: each warp then issues full 512-byte (16-byte vectors) reads
// over the bus, and every thread has its read in flight at once.
#include "kernels/cuda/device_utils.cuh"

namespace engram::cuda {
namespace {

constexpr int kThreads = 256;

// dst[i] (vector c of row r, i = r * row_vecs + c) = table[rows[r] * row_vecs + c]. `table` is
// deliberately not __restrict__: it may be mapped host memory, read with plain coherent loads
// (ld.global), not through the non-coherent read-only path.
template <typename V>
__global__ void GatherRowBytesKernel(const V* table, int64_t table_rows, int64_t row_vecs,
                                     const int64_t* __restrict__ rows, int64_t n_rows,
                                     V* __restrict__ dst, uint32_t* err) {
  const int64_t total = n_rows * row_vecs;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / row_vecs, c = i - r * row_vecs;
    const int64_t src = rows[r];
    if (src < 0 || src >= table_rows) {
      if (c == 0) FlagError(err, kErrChannelRow);
      dst[i] = V{};
      continue;
    }
    dst[i] = table[src * row_vecs + c];
  }
}

// dst[slots[r] * row_vecs + c] = src[i] (i = r * row_vecs + c).
template <typename V>
__global__ void ScatterRowBytesKernel(const V* __restrict__ src, int64_t row_vecs,
                                      const int64_t* __restrict__ slots, int64_t n_rows,
                                      V* __restrict__ dst, int64_t dst_rows, uint32_t* err) {
  const int64_t total = n_rows * row_vecs;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / row_vecs, c = i - r * row_vecs;
    const int64_t slot = slots[r];
    if (slot < 0 || slot >= dst_rows) {
      if (c == 0) FlagError(err, kErrChannelRow);
      continue;
    }
    dst[slot * row_vecs + c] = src[i];
  }
}

// The widest access (16, 8, 4, 2 or 1 bytes) that divides the row size and both addresses, so
// every row of both tensors starts on a multiple of it.
int VecBytes(int64_t row_bytes, const void* a, const void* b) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b) |
                         static_cast<uintptr_t>(row_bytes);
  for (int w : {16, 8, 4, 2}) {
    if ((bits & static_cast<uintptr_t>(w - 1)) == 0) return w;
  }
  return 1;
}

// Calls launch(V{}) with the widest word V that divides the row size and aligns both pointers.
template <typename F>
cudaError_t WithVecType(int64_t row_bytes, const void* a, const void* b, F launch) {
  switch (VecBytes(row_bytes, a, b)) {
    case 16:
      return launch(uint4{});
    case 8:
      return launch(uint2{});
    case 4:
      return launch(uint32_t{});
    case 2:
      return launch(uint16_t{});
    default:
      return launch(uint8_t{});
  }
}

}  // namespace

cudaError_t LaunchGatherRowBytes(const void* table, int64_t table_rows, int64_t row_bytes,
                                 const int64_t* rows, int64_t n, void* dst, uint32_t* err,
                                 cudaStream_t stream) {
  if (n <= 0 || row_bytes <= 0) return cudaSuccess;
  return WithVecType(row_bytes, table, dst, [&](auto v) {
    using V = decltype(v);
    const int64_t row_vecs = row_bytes / static_cast<int64_t>(sizeof(V));
    GatherRowBytesKernel<V><<<GridFor(n * row_vecs, kThreads), kThreads, 0, stream>>>(
        static_cast<const V*>(table), table_rows, row_vecs, rows, n, static_cast<V*>(dst), err);
    return cudaGetLastError();
  });
}

cudaError_t LaunchScatterRowBytes(const void* src, int64_t row_bytes, const int64_t* slots,
                                  int64_t n, void* dst, int64_t dst_rows, uint32_t* err,
                                  cudaStream_t stream) {
  if (n <= 0 || row_bytes <= 0) return cudaSuccess;
  return WithVecType(row_bytes, src, dst, [&](auto v) {
    using V = decltype(v);
    const int64_t row_vecs = row_bytes / static_cast<int64_t>(sizeof(V));
    ScatterRowBytesKernel<V><<<GridFor(n * row_vecs, kThreads), kThreads, 0, stream>>>(
        static_cast<const V*>(src), row_vecs, slots, n, static_cast<V*>(dst), dst_rows, err);
    return cudaGetLastError();
  });
}

}  // namespace engram::cuda
