#include "model/table_checksum.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>
#include "common/file_read.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/parallel.h"
#include "model/config.h"
#include "model/weights.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr size_t kReadPiece = size_t{4} << 20;  // pread size inside a chunk

// ParallelFor over the chunks of a file; an allocation failure in a chunk is RESOURCE_EXHAUSTED.
Status HashChunks(size_t n, int threads, const std::function<Status(size_t)>& fn) {
  return ParallelFor(n, threads, [&](size_t i) -> Status {
    try {
      return fn(i);
    } catch (const std::bad_alloc&) {
      return ResourceExhausted("out of memory while hashing");
    }
  });
}

// XXH3-64 over the chunk digests, each as 8 little-endian bytes.
uint64_t CombineDigests(const std::vector<uint64_t>& digests) {
  std::vector<unsigned char> bytes(digests.size() * 8);
  for (size_t i = 0; i < digests.size(); ++i) {
    for (int b = 0; b < 8; ++b) {
      bytes[i * 8 + static_cast<size_t>(b)] = static_cast<unsigned char>(digests[i] >> (8 * b));
    }
  }
  return XXH3_64bits(bytes.data(), bytes.size());
}

size_t ChunkCount(uint64_t bytes, uint64_t chunk_bytes) {
  return static_cast<size_t>((bytes + chunk_bytes - 1) / chunk_bytes);
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

struct StateDeleter {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};

// The checksum of bytes [offset, offset + nbytes) of `path`, read with pread.
Result<uint64_t> ChecksumFileRange(const std::string& path, uint64_t offset, uint64_t nbytes,
                                   uint64_t chunk_bytes, int threads) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) return ErrnoStatus(StatusCode::kNotFound, path + ": cannot open", errno);
  (void)::posix_fadvise(f.fd, static_cast<off_t>(offset), static_cast<off_t>(nbytes),
                        POSIX_FADV_SEQUENTIAL);
  std::vector<uint64_t> digests(ChunkCount(nbytes, chunk_bytes));
  const uint64_t end = offset + nbytes;
  Status st = HashChunks(digests.size(), threads, [&](size_t i) -> Status {
    std::unique_ptr<XXH3_state_t, StateDeleter> state(XXH3_createState());
    if (!state || XXH3_64bits_reset(state.get()) != XXH_OK) {
      return ResourceExhausted("out of memory while hashing");
    }
    const uint64_t begin = offset + i * chunk_bytes;
    const uint64_t stop = std::min(begin + chunk_bytes, end);
    std::vector<char> buf(static_cast<size_t>(std::min<uint64_t>(kReadPiece, stop - begin)));
    for (uint64_t pos = begin; pos < stop;) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), stop - pos));
      const ssize_t r = ::pread(f.fd, buf.data(), want, static_cast<off_t>(pos));
      if (r < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(StatusCode::kDataLoss,
                           fmt::format("{}: read of bytes [{}, {})", path, pos, pos + want), errno);
      }
      if (r == 0) {
        return DataLoss("{}: unexpected end of file at byte {} (the tensor spans bytes [{}, {}))",
                        path, pos, offset, end);
      }
      XXH3_64bits_update(state.get(), buf.data(), static_cast<size_t>(r));
      pos += static_cast<uint64_t>(r);
    }
    digests[i] = XXH3_64bits_digest(state.get());
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return CombineDigests(digests);
}

std::string Describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return fmt::format("{} {}", v.type_name(), text);
}

double GBps(uint64_t bytes, double seconds) { return seconds > 0 ? bytes / 1e9 / seconds : 0.0; }

// Hashes `names` of `store`; stops at the first error.
Status HashTensors(const TensorStore& store, const std::vector<std::string>& names,
                   uint64_t chunk_bytes, int threads, std::map<std::string, uint64_t>* out,
                   ChecksumReport* report) {
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& name : names) {
    ENGRAM_ASSIGN_OR_RETURN(uint64_t sum, ChecksumTensor(store, name, chunk_bytes, threads));
    (*out)[name] = sum;
    report->tensors++;
    report->bytes += store.Info(name)->nbytes;
  }
  report->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return Status::Ok();
}

}  // namespace

Result<uint64_t> ChecksumBytes(const void* data, size_t bytes, size_t chunk_bytes, int threads) {
  if (chunk_bytes == 0) return InvalidArgument("checksum chunk_bytes must be positive");
  const auto* p = static_cast<const unsigned char*>(data);
  std::vector<uint64_t> digests(ChunkCount(bytes, chunk_bytes));
  Status st = ParallelFor(digests.size(), threads, [&](size_t i) -> Status {
    const size_t begin = i * chunk_bytes;
    digests[i] = XXH3_64bits(p + begin, std::min(chunk_bytes, bytes - begin));
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return CombineDigests(digests);
}

Result<uint64_t> ChecksumTensor(const TensorStore& store, const std::string& name,
                                uint64_t chunk_bytes, int threads) {
  if (chunk_bytes == 0) return InvalidArgument("checksum chunk_bytes must be positive");
  const TensorInfo* info = store.Info(name);
  if (info == nullptr) return NotFound("tensor {} is not in the model", name);
  if (info->file.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(Tensor view, store.Get(name));
    return ChecksumBytes(view.data, view.nbytes(), static_cast<size_t>(chunk_bytes), threads);
  }
  auto sum = ChecksumFileRange(info->file, info->file_offset, info->nbytes, chunk_bytes, threads);
  if (!sum.ok()) return sum.status().WithContext(name);
  return sum;
}

std::string ChecksumHex(uint64_t checksum) { return fmt::format("{:016x}", checksum); }

Result<uint64_t> ParseChecksumHex(std::string_view hex) {
  if (hex.size() != 16) {
    return InvalidArgument("\"{}\" is not 16 hex digits ({} characters)", hex, hex.size());
  }
  uint64_t v = 0;
  for (char c : hex) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return InvalidArgument("\"{}\" is not 16 hex digits ('{}' is not a hex digit)", hex, c);
    }
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return v;
}

Result<TableChecksums> ParseTableChecksums(std::string_view text, const std::string& origin) {
  ENGRAM_ASSIGN_OR_RETURN(json j, ParseJson(text, origin));
  if (!j.is_object())
    return InvalidArgument("{}: expected a JSON object, found {}", origin, Describe(j));
  for (const auto& [key, value] : j.items()) {
    if (key != "algorithm" && key != "chunk_bytes" && key != "tensors") {
      return InvalidArgument("{}: unknown key \"{}\" (allowed: algorithm, chunk_bytes, tensors)",
                             origin, key);
    }
  }
  for (const char* key : {"algorithm", "chunk_bytes", "tensors"}) {
    if (!j.contains(key)) return InvalidArgument("{}: missing required key \"{}\"", origin, key);
  }
  const json& algorithm = j.at("algorithm");
  if (!algorithm.is_string()) {
    return InvalidArgument("{}: key \"algorithm\" must be a string, found {}", origin,
                           Describe(algorithm));
  }
  if (algorithm.get<std::string>() != kTableChecksumAlgorithm) {
    return InvalidArgument("{}: algorithm \"{}\" is not supported (expected \"{}\")", origin,
                           algorithm.get<std::string>(), kTableChecksumAlgorithm);
  }
  TableChecksums c;
  const json& chunk = j.at("chunk_bytes");
  if (!chunk.is_number_unsigned() || chunk.get<uint64_t>() == 0) {
    return InvalidArgument("{}: key \"chunk_bytes\" must be a positive integer, found {}", origin,
                           Describe(chunk));
  }
  c.chunk_bytes = chunk.get<uint64_t>();
  const json& tensors = j.at("tensors");
  if (!tensors.is_object()) {
    return InvalidArgument(
        "{}: key \"tensors\" must be an object of tensor name -> checksum, "
        "found {}",
        origin, Describe(tensors));
  }
  for (const auto& [name, value] : tensors.items()) {
    if (!value.is_string()) {
      return InvalidArgument("{}: tensors.\"{}\" must be a string of 16 hex digits, found {}",
                             origin, name, Describe(value));
    }
    auto sum = ParseChecksumHex(value.get<std::string>());
    if (!sum.ok())
      return InvalidArgument("{}: tensors.\"{}\": {}", origin, name, sum.status().message());
    c.tensors[name] = *sum;
  }
  return c;
}

Result<TableChecksums> LoadTableChecksums(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(std::string text,
                          ReadRegularFile(path, kMaxSidecarFileBytes, "checksums file"));
  return ParseTableChecksums(text, path);
}

std::string TableChecksumsJson(const TableChecksums& checksums) {
  json tensors = json::object();
  for (const auto& [name, sum] : checksums.tensors) tensors[name] = ChecksumHex(sum);
  json j = {{"algorithm", std::string(kTableChecksumAlgorithm)},
            {"chunk_bytes", checksums.chunk_bytes},
            {"tensors", tensors}};
  return j.dump(2) + "\n";
}

Status SaveTableChecksums(const std::string& path, const TableChecksums& checksums) {
  const std::string tmp = path + ".partial";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << TableChecksumsJson(checksums);
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      return Unavailable("{}: cannot write", tmp);
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Unavailable("{}: cannot rename to {}: {}", tmp, path, ec.message());
  }
  return Status::Ok();
}

Status WriteTableChecksums(const std::string& model_dir, int threads,
                           std::span<const std::string> tensor_names, uint64_t chunk_bytes,
                           ChecksumReport* report) {
  if (chunk_bytes == 0) return InvalidArgument("checksum chunk_bytes must be positive");
  ChecksumReport local;
  if (report == nullptr) report = &local;
  *report = ChecksumReport{};
  const fs::path dir(model_dir);
  std::vector<std::string> names(tensor_names.begin(), tensor_names.end());
  std::vector<std::string> scales;  // of FP8 tables: part of every row, checked with them
  if (names.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::Load((dir / "config.json").string()));
    if (config.engram) {
      for (int layer : config.engram->layer_ids) {
        names.push_back(EngramTableName(*config.engram, layer));
        scales.push_back(EngramScaleName(*config.engram, layer));
      }
    }
  }
  ENGRAM_ASSIGN_OR_RETURN(TensorStore store, TensorStore::OpenDirectory(model_dir));
  for (std::string& scale : scales) {
    if (store.Has(scale)) names.push_back(std::move(scale));
  }
  for (const std::string& name : names) {
    if (!store.Has(name)) return NotFound("{}: tensor {} is not in the model", model_dir, name);
  }
  TableChecksums c;
  c.chunk_bytes = chunk_bytes;
  ENGRAM_RETURN_IF_ERROR(HashTensors(store, names, chunk_bytes, threads, &c.tensors, report));
  const std::string path = (dir / kTableChecksumsFile).string();
  ENGRAM_RETURN_IF_ERROR(SaveTableChecksums(path, c));
  spdlog::info("table checksums: wrote {} ({} tensors, {:.3f} GB hashed in {:.2f} s, {:.2f} GB/s)",
               path, report->tensors, report->bytes / 1e9, report->seconds,
               GBps(report->bytes, report->seconds));
  return Status::Ok();
}

Status VerifyTableChecksums(const TensorStore& store, const std::string& model_dir,
                            std::span<const std::string> tensor_names, int threads,
                            ChecksumReport* report, const std::map<std::string, Tensor>* copies) {
  ChecksumReport local;
  if (report == nullptr) report = &local;
  *report = ChecksumReport{};
  if (model_dir.empty()) {
    spdlog::debug("table checksums: no model directory (in-memory model), nothing to verify");
    return Status::Ok();
  }
  const std::string path = (fs::path(model_dir) / kTableChecksumsFile).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    spdlog::info("table checksums: {} has no {}, tables not verified", model_dir,
                 kTableChecksumsFile);
    return Status::Ok();
  }
  report->file_present = true;
  ENGRAM_ASSIGN_OR_RETURN(TableChecksums file, LoadTableChecksums(path));
  for (const auto& [name, sum] : file.tensors) {
    if (!store.Has(name)) {
      return InvalidArgument("{}: tensors lists \"{}\", which is not a tensor of the model in {}",
                             path, name, model_dir);
    }
  }
  std::vector<std::string> names;
  if (tensor_names.empty()) {
    for (const auto& [name, sum] : file.tensors) names.push_back(name);
  } else {
    for (const std::string& name : tensor_names) {
      if (file.tensors.count(name)) {
        names.push_back(name);
      } else {
        spdlog::warn("table checksums: {} lists no checksum for {}; not verified", path, name);
        report->unlisted++;
      }
    }
  }
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& name : names) {
    const uint64_t expected = file.tensors.at(name);
    const TensorInfo& info = *store.Info(name);
    const Tensor* copy = nullptr;
    if (copies != nullptr) {
      auto it = copies->find(name);
      if (it != copies->end()) copy = &it->second;
    }
    const bool in_copy = copy != nullptr;
    uint64_t found = 0;
    if (in_copy) {
      if (copy->nbytes() != info.nbytes) {
        return Internal("table checksums: the copy of {} holds {} bytes, the tensor {}", name,
                        copy->nbytes(), info.nbytes);
      }
      ENGRAM_ASSIGN_OR_RETURN(found,
                              ChecksumBytes(copy->data, copy->nbytes(), file.chunk_bytes, threads));
    } else {
      ENGRAM_ASSIGN_OR_RETURN(found, ChecksumTensor(store, name, file.chunk_bytes, threads));
    }
    if (found != expected) {
      std::string where = info.file.empty()
                              ? std::string("the in-memory tensor")
                              : fmt::format("{} (bytes [{}, {}))", info.file, info.file_offset,
                                            info.file_offset + info.nbytes);
      if (in_copy) where += ", as copied into host memory,";
      return DataLoss(
          "{}: checksum {} {} expected ({}) but the data in {} reads {}; the table is corrupt or "
          "was rewritten; regenerate the checksums with `engram pack checksum --model {}` if "
          "intentional",
          name, kTableChecksumAlgorithm, ChecksumHex(expected), path, where, ChecksumHex(found),
          model_dir);
    }
    report->tensors++;
    report->bytes += info.nbytes;
  }
  report->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("table checksums: {} tensors of {} verified ({:.3f} GB in {:.2f} s, {:.2f} GB/s)",
               report->tensors, model_dir, report->bytes / 1e9, report->seconds,
               GBps(report->bytes, report->seconds));
  return Status::Ok();
}

Status VerifyTableChecksums(const ModelFiles& files, std::span<const std::string> tensor_names,
                            int threads, ChecksumReport* report,
                            const std::map<std::string, Tensor>* copies) {
  return VerifyTableChecksums(files.store, files.dir, tensor_names, threads, report, copies);
}

}  // namespace engram
