// Safetensors reading (single file or sharded with model.safetensors.index.json) and
// streaming writing. Files are memory-mapped read-only; tensors come back as host Tensors
// that alias the mapping and keep it alive. Every error names the file and tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/tensor.h"

namespace engram {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::string file;          // path of the file that holds it ("" for in-memory tensors)
  uint64_t file_offset = 0;  // absolute byte offset of the data in `file`
  uint64_t nbytes = 0;
};

// The tensors of one model directory (or of synthetic in-memory weights). Opening maps the
// files and parses only the headers (instant for tens of GB). Views of mapped tensors are
// read-only memory: never write through Tensor::data. Immutable after opening (AddInMemory
// aside): const methods are safe to call from any thread.
class TensorStore {
 public:
  // Opens dir/model.safetensors.index.json if present, else every dir/*.safetensors.
  // Checks headers: JSON well-formed, dtypes known, offsets inside the file, sizes equal to
  // shape x dtype, no overlaps; DATA_LOSS for truncated files.
  static Result<TensorStore> OpenDirectory(const std::string& dir);
  static Result<TensorStore> OpenFile(const std::string& path);
  // Adds an in-memory tensor (synthetic models); the store shares ownership.
  void AddInMemory(const std::string& name, Tensor host);
  // Gives up the store's share of an in-memory tensor (e.g. once the dram tier holds its own
  // copy of an Engram table, so the synthetic table does not occupy DRAM twice). Its Info
  // stays; Get returns FAILED_PRECONDITION. No-op for file-backed or unknown tensors.
  void ReleaseInMemory(const std::string& name);

  bool Has(const std::string& name) const;
  const TensorInfo* Info(const std::string& name) const;
  std::vector<std::string> Names() const;
  const std::string& source() const { return source_; }  // directory or file
  // The tensor as a host view. NOT_FOUND names the tensor and the directory.
  Result<Tensor> Get(const std::string& name) const;
  // As Get, and checks the shape: INVALID_ARGUMENT "file: tensor NAME has shape [..],
  // expected [..]".
  Result<Tensor> GetChecked(const std::string& name, const std::vector<int64_t>& shape) const;

 private:
  struct Entry {
    TensorInfo info;
    Tensor view;
  };
  std::map<std::string, Entry> entries_;
  std::string source_;  // directory or file, for messages
};

// Writes a safetensors file: all tensor infos first (the header), then each tensor's bytes in
// the same order, streamed. Usage: Create(path, infos) -> Append(bytes...) in order ->
// Finish(). Data is written with large buffered writes to "path.partial", renamed to `path`
// by Finish; a writer destroyed before Finish removes the partial file. An Append may cross
// tensor boundaries (the data is one stream). Not thread-safe.
class SafetensorsWriter {
 public:
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  static Result<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, const std::vector<Spec>& specs,
      const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  // Appends `bytes` bytes of the current tensor's data; tensors must be completed in order.
  Status Append(const void* data, size_t bytes);
  Status Finish();

 private:
  SafetensorsWriter() = default;
  void SkipEmpty();  // moves current_ past completed (and empty) tensors
  Status Flush();
  int fd_ = -1;
  std::string path_;
  std::string tmp_path_;      // written here, renamed to path_ by Finish
  std::vector<char> buffer_;  // pending bytes (header first), flushed in large writes
  std::vector<uint64_t> sizes_;
  size_t current_ = 0;
  uint64_t written_in_current_ = 0;
};

}  // namespace engram
