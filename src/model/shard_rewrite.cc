#include "model/shard_rewrite.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/parallel.h"
#include "model/table_checksum.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kIndexFile = "model.safetensors.index.json";

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

class Progress {
 public:
  Progress(bool on, std::string what, uint64_t total)
      : on_(on), what_(std::move(what)), total_(total) {}
  void Add(uint64_t bytes) {
    if (bytes == 0) return;
    done_ += bytes;
    if (!on_ || (Since(last_) < 1.0 && done_ < total_)) return;
    last_ = Clock::now();
    const double s = Since(start_);
    std::fprintf(stderr, "quantize: %.2f / %.2f GB of %s read, %.2f GB/s\n", done_ / 1e9,
                 total_ / 1e9, what_.c_str(), s > 0 ? done_ / 1e9 / s : 0.0);
  }

 private:
  bool on_;
  std::string what_;
  uint64_t total_, done_ = 0;
  Clock::time_point start_ = Clock::now(), last_ = Clock::now();
};

// Appends windows to a writer on a thread of its own while the next window is computed.
class OverlappedWriter final : public WindowSink {
 public:
  OverlappedWriter(SafetensorsWriter& w, Progress& progress) : w_(w), progress_(progress) {}
  ~OverlappedWriter() override { (void)Wait(); }
  std::vector<uint8_t>& Next() override { return buf_[next_]; }
  Status Submit(uint64_t source_bytes) override {
    ENGRAM_RETURN_IF_ERROR(Wait());
    std::vector<uint8_t>& b = buf_[next_];
    io_ = std::thread([this, &b] { status_ = w_.Append(b.data(), b.size()); });
    next_ ^= 1;
    progress_.Add(source_bytes);
    return Status::Ok();
  }
  Status Wait() {
    if (io_.joinable()) io_.join();
    return status_;
  }

 private:
  SafetensorsWriter& w_;
  Progress& progress_;
  std::vector<uint8_t> buf_[2];
  int next_ = 0;
  std::thread io_;
  Status status_;
};

struct ShardTensor {
  std::string name;
  const TensorInfo* info = nullptr;
  const TensorRewrite* rewrite = nullptr;  // null: copied
};

Status WriteShard(const TensorStore& store, const std::string& path,
                  const std::vector<ShardTensor>& tensors, Progress& progress) {
  std::vector<SafetensorsWriter::Spec> specs;
  for (const ShardTensor& t : tensors) {
    if (t.rewrite == nullptr) {
      specs.push_back({t.name, t.info->dtype, t.info->shape});
    } else {
      specs.insert(specs.end(), t.rewrite->outputs.begin(), t.rewrite->outputs.end());
    }
  }
  ENGRAM_ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path, specs, {{"format", "pt"}}));
  OverlappedWriter out(*writer, progress);
  for (const ShardTensor& t : tensors) {
    ENGRAM_ASSIGN_OR_RETURN(Tensor src, store.Get(t.name));
    if (t.rewrite == nullptr) {
      ENGRAM_RETURN_IF_ERROR(out.Wait());
      ENGRAM_RETURN_IF_ERROR(writer->Append(src.data, src.nbytes()));
    } else {
      ENGRAM_RETURN_IF_ERROR(t.rewrite->write(src, out));
    }
  }
  ENGRAM_RETURN_IF_ERROR(out.Wait());
  return writer->Finish();
}

Status WriteText(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return Unavailable("{}: cannot write", path);
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) return Unavailable("{}: short write", path);
  return Status::Ok();
}

// engram_checksums.json of `out`: see the header.
Status WriteChecksums(const std::string& in, const TensorStore& store, const std::string& out,
                      const ShardRewritePlan& plan) {
  const std::string in_path = (fs::path(in) / kTableChecksumsFile).string();
  TableChecksums old;
  auto loaded = LoadTableChecksums(in_path);
  if (loaded.ok()) {
    old = std::move(*loaded);
  } else if (loaded.status().code() != StatusCode::kNotFound) {
    return loaded.status();
  } else if (plan.checksums.empty()) {
    return Status::Ok();
  }
  std::set<std::string> hash(plan.checksums.begin(), plan.checksums.end());
  TableChecksums sums;
  sums.chunk_bytes = old.chunk_bytes;
  for (const auto& [name, checksum] : old.tensors) {
    if (!store.Has(name)) {
      return InvalidArgument("{}: lists tensor {}, which the model does not have", in_path, name);
    }
    auto it = plan.tensors.find(name);
    if (it == plan.tensors.end()) {
      if (!hash.count(name)) sums.tensors[name] = checksum;
      continue;
    }
    for (const SafetensorsWriter::Spec& s : it->second.outputs) hash.insert(s.name);
  }
  ENGRAM_ASSIGN_OR_RETURN(TensorStore written, TensorStore::OpenDirectory(out));
  for (const std::string& name : hash) {
    ENGRAM_ASSIGN_OR_RETURN(sums.tensors[name],
                            ChecksumTensor(written, name, sums.chunk_bytes, plan.threads));
  }
  return SaveTableChecksums((fs::path(out) / kTableChecksumsFile).string(), sums);
}

}  // namespace

Status CheckRewriteTarget(const std::string& in, const std::string& out) {
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(in, out, ec)) {
    return FailedPrecondition("pack quantize: --out {} is the model directory itself", out);
  }
  return Status::Ok();
}

Result<ShardRewriteReport> RewriteModel(const std::string& in, const TensorStore& store,
                                        const std::string& out, const ShardRewritePlan& plan) {
  const auto start = Clock::now();
  ENGRAM_RETURN_IF_ERROR(CheckRewriteTarget(in, out));
  std::error_code ec;
  ShardRewriteReport report;
  for (const auto& [name, rewrite] : plan.tensors) {
    const TensorInfo* info = store.Info(name);
    if (info == nullptr) return InvalidArgument("{}: no tensor {}", in, name);
    report.rewritten_bytes_in += info->nbytes;
  }
  fs::create_directories(out, ec);
  if (ec) return Unavailable("{}: cannot create the directory: {}", out, ec.message());

  // Shards by file, tensors in file order.
  std::map<std::string, std::vector<ShardTensor>> shards;
  for (const std::string& name : store.Names()) {
    const TensorInfo* info = store.Info(name);
    auto it = plan.tensors.find(name);
    shards[info->file].push_back({name, info, it != plan.tensors.end() ? &it->second : nullptr});
  }
  // The weight map; then the shards to rewrite first (the progress line and rewrite_seconds
  // time them alone), then those copied whole.
  nlohmann::json weight_map = nlohmann::json::object();
  std::vector<std::pair<std::string, std::vector<ShardTensor>*>> rewrite, copy;
  for (auto& [file, tensors] : shards) {
    std::sort(tensors.begin(), tensors.end(), [](const ShardTensor& a, const ShardTensor& b) {
      return a.info->file_offset < b.info->file_offset;
    });
    const std::string base = fs::path(file).filename().string();
    bool rewritten = false;
    for (const ShardTensor& t : tensors) {
      if (t.rewrite == nullptr) {
        weight_map[t.name] = base;
        continue;
      }
      rewritten = true;
      for (const SafetensorsWriter::Spec& s : t.rewrite->outputs) weight_map[s.name] = base;
    }
    (rewritten ? rewrite : copy).emplace_back(file, &tensors);
  }
  Progress progress(plan.progress, plan.what, report.rewritten_bytes_in);
  const auto rewrite_start = Clock::now();
  for (const auto& [file, tensors] : rewrite) {
    const std::string dst = (fs::path(out) / fs::path(file).filename()).string();
    ENGRAM_RETURN_IF_ERROR(
        WriteShard(store, dst, *tensors, progress).WithContext("pack quantize: " + dst));
  }
  report.rewrite_seconds = Since(rewrite_start);
  const auto copy_start = Clock::now();
  for (const auto& [file, tensors] : copy) {
    const std::string dst = (fs::path(out) / fs::path(file).filename()).string();
    fs::copy_file(file, dst, fs::copy_options::overwrite_existing, ec);
    if (ec) return Unavailable("{}: cannot copy to {}: {}", file, dst, ec.message());
    report.copied_bytes += fs::file_size(file, ec);
  }
  // The other files: config, tokenizer, compression map (not the old index and checksums).
  std::error_code list_ec;
  for (fs::directory_iterator it(in, list_ec); !list_ec && it != fs::directory_iterator();
       it.increment(list_ec)) {
    const fs::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || entry.path().extension() == ".safetensors" ||
        name == kIndexFile || name == kTableChecksumsFile ||
        (name == "config.json" && plan.config_json)) {
      continue;
    }
    fs::copy_file(entry.path(), fs::path(out) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return Unavailable("{}: cannot copy: {}", entry.path().string(), ec.message());
    report.copied_bytes += entry.file_size(ec);
  }
  if (list_ec) return Unavailable("{}: cannot list the directory: {}", in, list_ec.message());
  report.copy_seconds = Since(copy_start);
  if (plan.config_json) {
    ENGRAM_RETURN_IF_ERROR(WriteText((fs::path(out) / "config.json").string(), *plan.config_json));
  }
  if (shards.size() > 1 || fs::exists(fs::path(in) / kIndexFile, ec)) {
    const nlohmann::json index = {{"metadata", nlohmann::json::object()},
                                  {"weight_map", weight_map}};
    ENGRAM_RETURN_IF_ERROR(WriteText((fs::path(out) / kIndexFile).string(), index.dump(2) + "\n"));
  }
  ENGRAM_RETURN_IF_ERROR(WriteChecksums(in, store, out, plan));
  report.total_seconds = Since(start);
  return report;
}

}  // namespace engram
