// Engram table checksums: safetensors carries none, so a model directory may hold
// engram_checksums.json beside config.json, and a corrupt or rewritten table is refused at
// start with a message naming the file and the tensor (docs/formats.md).
//
// Algorithm "xxh3-64-chunked": the tensor's bytes are split into chunks of `chunk_bytes` (the
// last one shorter), each chunk is hashed with XXH3-64 (seed 0), and the checksum is XXH3-64
// over the concatenation of the chunk digests, each as 8 little-endian bytes. Chunks are
// hashed in parallel, so verification runs at the read speed of the medium. Zero bytes give
// XXH3-64 of the empty input. Written as 16 lowercase hex digits.
//
// File: {"algorithm": "xxh3-64-chunked", "chunk_bytes": 67108864,
//        "tensors": {"<tensor name>": "<16 hex digits>", ...}}
// All three keys are required and no other key is allowed. By default the Engram tables are
// listed (EngramTableName), but any tensor of the model may be.
//
// Thread safety: every function is reentrant; they start and join their own threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/model_files.h"
#include "model/safetensors.h"

namespace engram {

inline constexpr std::string_view kTableChecksumsFile = "engram_checksums.json";
inline constexpr std::string_view kTableChecksumAlgorithm = "xxh3-64-chunked";
inline constexpr uint64_t kDefaultChecksumChunkBytes = uint64_t{64} << 20;  // 64 MiB

// The contents of engram_checksums.json.
struct TableChecksums {
  uint64_t chunk_bytes = kDefaultChecksumChunkBytes;
  std::map<std::string, uint64_t> tensors;  // tensor name -> checksum
};

// What a checksum run did (for logs and the CLI).
struct ChecksumReport {
  bool file_present = false;  // Verify: engram_checksums.json exists
  int tensors = 0;            // tensors hashed (Verify: and matched)
  int unlisted = 0;           // Verify: requested tensors the file has no checksum for
  uint64_t bytes = 0;         // bytes hashed
  double seconds = 0;         // wall time of the hashing
};

// The checksum of `bytes` bytes at `data` (chunked as above). `threads` 0 = min(hardware
// threads, 8); never more threads than chunks; if threads cannot be started, fewer are used.
// INVALID_ARGUMENT when chunk_bytes is 0.
Result<uint64_t> ChecksumBytes(const void* data, size_t bytes, size_t chunk_bytes, int threads);

// The checksum of tensor `name` of `store`. A file-backed tensor is read with pread from its
// file (an I/O error is DATA_LOSS naming the file, never a SIGBUS through the mapping); an
// in-memory tensor is hashed in place. NOT_FOUND when the store has no such tensor.
Result<uint64_t> ChecksumTensor(const TensorStore& store, const std::string& name,
                                uint64_t chunk_bytes, int threads);

// 16 lowercase hex digits.
std::string ChecksumHex(uint64_t checksum);
// Exactly 16 hex digits (either case); INVALID_ARGUMENT otherwise.
Result<uint64_t> ParseChecksumHex(std::string_view hex);

// Parses the file's JSON text; `origin` (the path) prefixes every error. Malformed JSON, a
// missing or unknown key, another algorithm, a chunk_bytes that is not a positive integer or
// a checksum that is not 16 hex digits is INVALID_ARGUMENT naming the key.
Result<TableChecksums> ParseTableChecksums(std::string_view text, const std::string& origin);
// Reads and parses `path`; NOT_FOUND when absent.
Result<TableChecksums> LoadTableChecksums(const std::string& path);
// Pretty JSON (keys sorted), newline-terminated.
std::string TableChecksumsJson(const TableChecksums& checksums);
// Writes `path` atomically (path.partial, then rename).
Status SaveTableChecksums(const std::string& path, const TableChecksums& checksums);

// Computes the checksums of `tensor_names` (empty: the Engram tables that config.json names,
// with the E8M0 scales of FP8 tables)
// of the model directory `model_dir` and writes model_dir/engram_checksums.json, replacing
// any previous one. Opens only config.json and the safetensors headers. Logs the time and
// GB/s at info level; fills *report when given.
Status WriteTableChecksums(const std::string& model_dir, int threads = 0,
                           std::span<const std::string> tensor_names = {},
                           uint64_t chunk_bytes = kDefaultChecksumChunkBytes,
                           ChecksumReport* report = nullptr);

// Verifies the tensors of `store` against model_dir/engram_checksums.json.
// - `model_dir` empty (a synth: model) or the file absent: OK, nothing to verify (logged).
// - The file is parsed first (errors as ParseTableChecksums); every tensor it lists must be
//   in the store, else INVALID_ARGUMENT naming the file and the tensor.
// - `tensor_names` selects what is hashed (empty: everything the file lists); a selected name
//   the file does not list is skipped with a warning (report->unlisted).
// - The first mismatch is DATA_LOSS naming the tensor, the expected and found checksums and
//   the safetensors file and byte range it was read from.
// - `copies` (optional): host copies of some of the tensors (e.g. the dram tier's tables);
//   those are hashed in memory instead of reading the files again, so the bytes that will be
//   served are the ones checked. A copy whose size differs from the tensor is INTERNAL.
// Logs the time and GB/s at info level; fills *report when given.
Status VerifyTableChecksums(const TensorStore& store, const std::string& model_dir,
                            std::span<const std::string> tensor_names, int threads = 0,
                            ChecksumReport* report = nullptr,
                            const std::map<std::string, Tensor>* copies = nullptr);
// The same for an opened model: files.store against files.dir.
Status VerifyTableChecksums(const ModelFiles& files, std::span<const std::string> tensor_names,
                            int threads = 0, ChecksumReport* report = nullptr,
                            const std::map<std::string, Tensor>* copies = nullptr);

}  // namespace engram
