#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "common/file_read.h"
#include "common/mapped_files.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

namespace engram {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 30;  // sanity bound on the JSON header
constexpr size_t kWriteBuffer = size_t{16} << 20;

// A read-only private mapping of a whole file; unmapped when the last view goes away.
class Mapping {
 public:
  static Result<std::shared_ptr<Mapping>> Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      const StatusCode code = err == ENOENT   ? StatusCode::kNotFound
                              : err == EACCES ? StatusCode::kPermissionDenied
                                              : StatusCode::kUnavailable;
      return ErrnoStatus(code, path + ": cannot open", err);
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return ErrnoStatus(StatusCode::kUnavailable, path + ": fstat", err);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return InvalidArgument("{}: not a regular file", path);
    }
    auto m = std::shared_ptr<Mapping>(new Mapping());
    m->size_ = static_cast<uint64_t>(st.st_size);
    if (m->size_ > 0) {
      void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        return ErrnoStatus(StatusCode::kResourceExhausted, path + ": mmap", err);
      }
      m->data_ = static_cast<char*>(p);
      // Kept open by the registry: a SIGBUS in the mapping, or a change of the file's size or
      // mtime, marks the model broken instead of killing the process (common/mapped_files.h).
      m->guard_ = RegisterMappedFile(p, m->size_, fd, path);
      return m;
    }
    ::close(fd);
    return m;
  }
  ~Mapping() {
    if (data_ != nullptr) {
      UnregisterMappedFile(guard_);
      ::munmap(data_, size_);
    }
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  char* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  Mapping() = default;
  char* data_ = nullptr;
  uint64_t size_ = 0;
  int guard_ = -1;
};

struct ParsedTensor {
  TensorInfo info;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
};

// Element count of `shape`, or an error on negative dims / overflow.
Result<uint64_t> CountElements(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("negative dimension {}", d);
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) {
      return InvalidArgument("shape {} overflows", shape);
    }
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

Result<ParsedTensor> ParseEntry(const std::string& path, const std::string& name, const json& v) {
  auto bad = [&](const std::string& what) {
    return InvalidArgument("{}: tensor \"{}\": {}", path, name, what);
  };
  if (!v.is_object()) return bad("header entry is not an object");
  ParsedTensor t;
  t.info.name = name;
  t.info.file = path;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) return bad("missing string \"dtype\"");
  auto parsed = ParseDType(dt->get<std::string>());
  if (!parsed.ok()) return bad(parsed.status().message());
  t.info.dtype = *parsed;
  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) return bad("missing array \"shape\"");
  for (const json& d : *sh) {
    if (!d.is_number_unsigned())
      return bad(fmt::format("shape {} is not a list of sizes", sh->dump()));
    const uint64_t dim = d.get<uint64_t>();
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return bad(fmt::format("shape {} has an out-of-range dimension", sh->dump()));
    }
    t.info.shape.push_back(static_cast<int64_t>(dim));
  }
  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return bad("\"data_offsets\" must be [begin, end] with non-negative integers");
  }
  t.begin = (*off)[0].get<uint64_t>();
  t.end = (*off)[1].get<uint64_t>();
  if (t.end < t.begin) {
    return bad(fmt::format("data_offsets [{}, {}] end before they begin", t.begin, t.end));
  }
  auto count = CountElements(t.info.shape);
  if (!count.ok()) return bad(count.status().message());
  const uint64_t esize = DTypeSize(t.info.dtype);
  if (*count > std::numeric_limits<uint64_t>::max() / esize) {
    return bad(fmt::format("shape {} overflows", t.info.shape));
  }
  const uint64_t need = *count * esize;
  if (t.end - t.begin != need) {
    return bad(fmt::format("data_offsets [{}, {}] hold {} bytes, but shape {} x {} needs {} bytes",
                           t.begin, t.end, t.end - t.begin, t.info.shape, DTypeName(t.info.dtype),
                           need));
  }
  t.info.nbytes = need;
  return t;
}

Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, std::min(n, size_t{1} << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(StatusCode::kUnavailable, path + ": write", errno);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TensorStore

Result<TensorStore> TensorStore::OpenFile(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(std::shared_ptr<Mapping> map, Mapping::Open(path));
  const uint64_t size = map->size();
  if (size < 8) {
    return DataLoss("{}: file is {} bytes, too short for the 8-byte header length (truncated?)",
                    path, size);
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<unsigned char>(map->data()[i]);
  }
  if (header_len > size - 8) {
    return DataLoss("{}: header length {} extends beyond the file ({} bytes; truncated?)", path,
                    header_len, size);
  }
  if (header_len > kMaxHeaderBytes) {
    return InvalidArgument("{}: header length {} is implausibly large", path, header_len);
  }
  const char* hbegin = map->data() + 8;
  ENGRAM_ASSIGN_OR_RETURN(
      json header, ParseJson(std::string_view(hbegin, header_len), path + ": safetensors header"));
  if (!header.is_object()) {
    return InvalidArgument("{}: the safetensors header is not a valid JSON object", path);
  }
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;

  std::vector<ParsedTensor> tensors;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    ENGRAM_ASSIGN_OR_RETURN(ParsedTensor t, ParseEntry(path, it.key(), it.value()));
    if (t.end > data_size) {
      return DataLoss(
          "{}: tensor \"{}\": data_offsets [{}, {}] reach beyond the end of the file (data "
          "section holds {} bytes; truncated?)",
          path, t.info.name, t.begin, t.end, data_size);
    }
    t.info.file_offset = data_start + t.begin;
    tensors.push_back(std::move(t));
  }
  // No two non-empty tensors may share a byte.
  std::vector<const ParsedTensor*> order;
  for (const auto& t : tensors) {
    if (t.end > t.begin) order.push_back(&t);
  }
  std::sort(order.begin(), order.end(),
            [](const ParsedTensor* a, const ParsedTensor* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    const ParsedTensor* prev = order[i - 1];
    const ParsedTensor* cur = order[i];
    if (cur->begin < prev->end) {
      return InvalidArgument("{}: tensors \"{}\" [{}, {}] and \"{}\" [{}, {}] overlap", path,
                             prev->info.name, prev->begin, prev->end, cur->info.name, cur->begin,
                             cur->end);
    }
  }

  TensorStore store;
  store.source_ = path;
  std::shared_ptr<void> owner = map;
  for (auto& t : tensors) {
    Entry e;
    e.view = HostView(map->data() + t.info.file_offset, t.info.dtype, t.info.shape);
    e.view.owner = owner;
    e.info = std::move(t.info);
    std::string name = e.info.name;
    store.entries_.emplace(std::move(name), std::move(e));
  }
  return store;
}

Result<TensorStore> TensorStore::OpenDirectory(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("{}: not a directory", dir);
  TensorStore store;
  store.source_ = dir;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";

  auto merge = [&store](TensorStore&& shard) -> Status {
    for (auto& [name, entry] : shard.entries_) {
      auto it = store.entries_.find(name);
      if (it != store.entries_.end()) {
        return InvalidArgument("tensor \"{}\" appears in both {} and {}", name,
                               it->second.info.file, entry.info.file);
      }
      store.entries_.emplace(name, std::move(entry));
    }
    return Status::Ok();
  };

  if (fs::exists(index_path, ec)) {
    const std::string ipath = index_path.string();
    ENGRAM_ASSIGN_OR_RETURN(json index,
                            ReadJsonFile(ipath, kMaxSidecarFileBytes, "safetensors index"));
    if (!index.is_object()) {
      return InvalidArgument("{}: not a valid JSON object", ipath);
    }
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) {
      return InvalidArgument("{}: missing object \"weight_map\" ({{tensor name: shard file}})",
                             ipath);
    }
    std::map<std::string, std::string> shard_of;  // tensor -> shard file name
    std::vector<std::string> shards;              // distinct, in first-seen order
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string()) {
        return InvalidArgument("{}: weight_map[\"{}\"] is not a file name", ipath, it.key());
      }
      const std::string file = it.value().get<std::string>();
      if (file.empty() || fs::path(file).is_absolute()) {
        return InvalidArgument("{}: weight_map[\"{}\"] = \"{}\" is not a relative file name", ipath,
                               it.key(), file);
      }
      shard_of[it.key()] = file;
      if (std::find(shards.begin(), shards.end(), file) == shards.end()) shards.push_back(file);
    }
    for (const std::string& file : shards) {
      const std::string spath = (fs::path(dir) / file).string();
      if (!fs::exists(spath, ec)) {
        std::string example;
        for (const auto& [t, f] : shard_of) {
          if (f == file) {
            example = t;
            break;
          }
        }
        return NotFound(
            "{}: weight_map names shard \"{}\" (for tensor \"{}\"), which does not exist", ipath,
            file, example);
      }
      ENGRAM_ASSIGN_OR_RETURN(TensorStore shard, OpenFile(spath));
      ENGRAM_RETURN_IF_ERROR(merge(std::move(shard)).WithContext(ipath));
    }
    for (const auto& [tensor, file] : shard_of) {
      auto it = store.entries_.find(tensor);
      const std::string spath = (fs::path(dir) / file).string();
      if (it == store.entries_.end() || it->second.info.file != spath) {
        return InvalidArgument(
            "{}: weight_map puts tensor \"{}\" in \"{}\", but that file does not "
            "hold it",
            ipath, tensor, file);
      }
    }
    return store;
  }

  std::vector<std::string> files;
  for (const auto& de : fs::directory_iterator(dir, ec)) {
    if (de.path().extension() == ".safetensors" && de.is_regular_file(ec)) {
      files.push_back(de.path().string());
    }
  }
  if (ec) return Unavailable("{}: cannot list the directory: {}", dir, ec.message());
  if (files.empty()) {
    return NotFound("{}: no model.safetensors.index.json and no *.safetensors files", dir);
  }
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    ENGRAM_ASSIGN_OR_RETURN(TensorStore shard, OpenFile(f));
    ENGRAM_RETURN_IF_ERROR(merge(std::move(shard)).WithContext(dir));
  }
  return store;
}

void TensorStore::AddInMemory(const std::string& name, Tensor host) {
  Entry e;
  e.info.name = name;
  e.info.dtype = host.dtype;
  e.info.shape = host.shape;
  e.info.nbytes = host.nbytes();
  e.view = std::move(host);
  entries_[name] = std::move(e);
  if (source_.empty()) source_ = "<in-memory>";
}

bool TensorStore::Has(const std::string& name) const { return entries_.count(name) > 0; }

const TensorInfo* TensorStore::Info(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second.info;
}

std::vector<std::string> TensorStore::Names() const {
  std::vector<std::string> names;
  names.reserve(entries_.size());
  for (const auto& [name, e] : entries_) names.push_back(name);
  return names;
}

void TensorStore::ReleaseInMemory(const std::string& name) {
  auto it = entries_.find(name);
  if (it == entries_.end() || !it->second.info.file.empty()) return;
  it->second.view = Tensor();
}

Result<Tensor> TensorStore::Get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return NotFound("{}: no tensor \"{}\"", source_.empty() ? "<empty store>" : source_, name);
  }
  if (it->second.view.empty() && it->second.info.nbytes > 0) {
    return FailedPrecondition(
        "{}: tensor \"{}\" was released from memory (its data now lives "
        "in the Engram table tier)",
        source_, name);
  }
  return it->second.view;
}

Result<Tensor> TensorStore::GetChecked(const std::string& name,
                                       const std::vector<int64_t>& shape) const {
  ENGRAM_ASSIGN_OR_RETURN(Tensor t, Get(name));
  if (t.shape != shape) {
    const std::string& file = entries_.at(name).info.file;
    return InvalidArgument("{}: tensor {} has shape {}, expected {}", file.empty() ? source_ : file,
                           name, t.shape, shape);
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

Result<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, const std::vector<Spec>& specs,
    const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const Spec& s : specs) {
    if (s.name.empty() || s.name == "__metadata__" || !names.insert(s.name).second) {
      return InvalidArgument("{}: tensor name \"{}\" is empty, reserved or repeated", path, s.name);
    }
    auto count = CountElements(s.shape);
    if (!count.ok()) return count.status().WithContext(path + ": tensor " + s.name);
    const uint64_t bytes = *count * DTypeSize(s.dtype);
    header[s.name] = {{"dtype", std::string(DTypeName(s.dtype))},
                      {"shape", s.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data section starts 8-byte aligned

  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  w->tmp_path_ = path + ".partial";
  w->sizes_ = std::move(sizes);
  w->fd_ = ::open(w->tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w->fd_ < 0) return ErrnoStatus(StatusCode::kUnavailable, w->tmp_path_ + ": create", errno);
  w->buffer_.reserve(kWriteBuffer);
  char len[8];
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  w->buffer_.insert(w->buffer_.end(), len, len + 8);
  w->buffer_.insert(w->buffer_.end(), text.begin(), text.end());
  w->SkipEmpty();
  return w;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_path_.c_str());  // never leave a partial file that looks complete
  }
}

void SafetensorsWriter::SkipEmpty() {
  while (current_ < sizes_.size() && written_in_current_ == sizes_[current_]) {
    ++current_;
    written_in_current_ = 0;
  }
}

Status SafetensorsWriter::Flush() {
  ENGRAM_RETURN_IF_ERROR(WriteAll(fd_, buffer_.data(), buffer_.size(), tmp_path_));
  buffer_.clear();
  return Status::Ok();
}

Status SafetensorsWriter::Append(const void* data, size_t bytes) {
  if (fd_ < 0) return FailedPrecondition("{}: writer is closed", path_);
  uint64_t remaining = 0;
  for (size_t i = current_; i < sizes_.size(); ++i) remaining += sizes_[i];
  remaining -= written_in_current_;
  if (bytes > remaining) {
    return OutOfRange("{}: Append of {} bytes exceeds the {} bytes left in the declared tensors",
                      path_, bytes, remaining);
  }
  const char* p = static_cast<const char*>(data);
  if (buffer_.size() + bytes > kWriteBuffer) {
    ENGRAM_RETURN_IF_ERROR(Flush());
  }
  if (bytes >= kWriteBuffer) {
    ENGRAM_RETURN_IF_ERROR(WriteAll(fd_, p, bytes, tmp_path_));
  } else {
    buffer_.insert(buffer_.end(), p, p + bytes);
  }
  // Advance through the tensors this append completed.
  uint64_t left = bytes;
  while (left > 0) {
    const uint64_t take = std::min(left, sizes_[current_] - written_in_current_);
    written_in_current_ += take;
    left -= take;
    SkipEmpty();
  }
  return Status::Ok();
}

Status SafetensorsWriter::Finish() {
  if (fd_ < 0) return FailedPrecondition("{}: writer is closed", path_);
  SkipEmpty();
  if (current_ < sizes_.size()) {
    return FailedPrecondition("{}: Finish with tensor #{} incomplete ({} of {} bytes)", path_,
                              current_, written_in_current_, sizes_[current_]);
  }
  ENGRAM_RETURN_IF_ERROR(Flush());
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp_path_.c_str());
    return ErrnoStatus(StatusCode::kUnavailable, tmp_path_ + ": close", err);
  }
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_path_.c_str());
    return ErrnoStatus(StatusCode::kUnavailable, path_ + ": rename", err);
  }
  return Status::Ok();
}

}  // namespace engram
