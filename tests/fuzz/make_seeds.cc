// fuzz_seeds REPO OUT: writes the seed corpora of the fuzz targets to OUT/<target>/ (a target's
// name without "fuzz_"): repository files (configs/*.yaml, tests/data vectors and tokenizer
// variants, tests/fuzz/seeds/), the tiny, tiny-qwen2 and tiny-v41 synth models (config.json,
// safetensors, engram_checksums.json), small hand-built safetensors files and DeepSeek-V3's
// tokenizer.json cut down to its first ids (the whole file, 7.8 MB, is too slow a seed).
// Existing files under OUT are replaced. Exit status 1 with a message on any failure.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/file_read.h"
#include "common/logging.h"
#include "model/safetensors.h"
#include "model/synth.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr int32_t kTokenizerIds = 1500;  // ids kept of DeepSeek-V3's 128000-token vocabulary
constexpr int kHighAddedTokens = 4;      // added tokens above that, kept with new ids

Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Unavailable("cannot write {}", path.string());
  return Status::Ok();
}

Status Copy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return Unavailable("cannot copy {} to {}: {}", from.string(), to.string(), ec.message());
  return Status::Ok();
}

// Every regular file of `dir` (if it exists) into `out`.
Status CopyAll(const fs::path& dir, const fs::path& out) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return Status::Ok();
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) ENGRAM_RETURN_IF_ERROR(Copy(e.path(), out / e.path().filename()));
  }
  return Status::Ok();
}

Status SynthSeeds(const fs::path& out, const fs::path& work) {
  // tiny-v41: the flat engram_* config keys, F8_E4M3 tables and wkv with F8_E8M0 scales.
  for (const char* preset : {"tiny", "tiny-qwen2", "tiny-v41"}) {
    SynthOptions o;
    o.preset = preset;
    o.progress = false;
    o.threads = 1;
    o.dtype = std::string(preset) == "tiny" ? DType::kBF16 : DType::kF32;
    const fs::path dir = work / preset;
    ENGRAM_RETURN_IF_ERROR(WriteSynthModel(o, dir.string()));
    const std::string p = preset;
    ENGRAM_RETURN_IF_ERROR(Copy(dir / "config.json", out / "model_config" / (p + ".json")));
    ENGRAM_RETURN_IF_ERROR(Copy(dir / "engram_checksums.json", out / "checksums" / (p + ".json")));
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".safetensors") {
        ENGRAM_RETURN_IF_ERROR(
            Copy(e.path(), out / "safetensors" / (p + "-" + e.path().filename().string())));
      }
    }
    // The same config without its "engram" object (a plain Llama/Qwen2 config).
    if (p == "tiny-v41") continue;
    ENGRAM_ASSIGN_OR_RETURN(
        Json cfg, ReadJsonFile((dir / "config.json").string(), kMaxConfigFileBytes, "config.json"));
    cfg.erase("engram");
    ENGRAM_RETURN_IF_ERROR(
        WriteText(out / "model_config" / (p + "-no-engram.json"), cfg.dump(2) + "\n"));
    // And with Hugging Face's fine-grained FP8 quantization_config (what FP8 checkpoints carry).
    cfg["quantization_config"] = {{"quant_method", "fp8"},
                                  {"fmt", "e4m3"},
                                  {"activation_scheme", "dynamic"},
                                  {"weight_block_size", {128, 128}},
                                  {"modules_to_not_convert", {"lm_head"}}};
    ENGRAM_RETURN_IF_ERROR(WriteText(out / "model_config" / (p + "-fp8.json"), cfg.dump(2) + "\n"));
  }
  return Status::Ok();
}

// Small files of every dtype, an empty and a scalar tensor, metadata, no tensors at all.
Status SmallSafetensors(const fs::path& out) {
  struct File {
    const char* name;
    std::vector<SafetensorsWriter::Spec> specs;
    std::map<std::string, std::string> metadata;
  };
  const std::vector<File> files = {
      {"mixed.safetensors",
       {{"a.f32", DType::kF32, {2, 3}},
        {"b.bf16", DType::kBF16, {4}},
        {"c.f16", DType::kF16, {1, 1, 2}},
        {"d.i32", DType::kI32, {3}},
        {"e.i64", DType::kI64, {1}},
        {"f.u8", DType::kU8, {5}},
        {"f.e4m3", DType::kF8E4M3, {2, 32}},
        {"f.e8m0", DType::kF8E8M0, {2, 1}},
        {"g.empty", DType::kF32, {0, 4}},
        {"h.scalar", DType::kF32, {}}},
       {{"format", "pt"}}},
      {"one.safetensors", {{"w", DType::kF32, {1}}}, {}},
      {"none.safetensors", {}, {{"format", "pt"}}},
  };
  for (const File& f : files) {
    const std::string path = (out / f.name).string();
    ENGRAM_ASSIGN_OR_RETURN(auto w, SafetensorsWriter::Create(path, f.specs, f.metadata));
    for (const auto& s : f.specs) {
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      std::vector<unsigned char> bytes(static_cast<size_t>(n) * DTypeSize(s.dtype));
      for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 37 + 1);
      ENGRAM_RETURN_IF_ERROR(w->Append(bytes.data(), bytes.size()));
    }
    ENGRAM_RETURN_IF_ERROR(w->Finish());
  }
  return Status::Ok();
}

Status TokenizerSeeds(const fs::path& repo, const fs::path& out) {
  const fs::path variants = repo / "tests/data/tokenizer_variants_reference.json";
  ENGRAM_ASSIGN_OR_RETURN(
      Json doc, ReadJsonFile(variants.string(), kMaxTokenizerFileBytes, "tokenizer variants"));
  for (const Json& v : doc.at("variants")) {
    ENGRAM_RETURN_IF_ERROR(
        WriteText(out / (v.at("name").get<std::string>() + ".json"), v.at("tokenizer").dump()));
  }
  const fs::path deepseek = repo /
                            "tests/fixtures/tokenizer/node_modules/@lenml/"
                            "tokenizer-deepseek_v3/models/tokenizer.json";
  std::error_code ec;
  if (!fs::exists(deepseek, ec)) {
    std::fprintf(stderr,
                 "fuzz_seeds: %s is missing (scripts/setup.sh installs it); the "
                 "tokenizer corpus has only the variants\n",
                 deepseek.c_str());
    return Status::Ok();
  }
  ENGRAM_ASSIGN_OR_RETURN(Json t, ReadJsonFile(deepseek.string(), kMaxTokenizerFileBytes,
                                               "DeepSeek-V3 tokenizer.json"));
  Json& model = t.at("model");
  Json vocab = Json::object();
  for (const auto& [tok, id] : model.at("vocab").items()) {
    if (id.get<int64_t>() < kTokenizerIds) vocab[tok] = id;
  }
  Json merges = Json::array();
  for (const Json& m : model.at("merges")) {
    const std::string s = m.is_string() ? m.get<std::string>()
                                        : m[0].get<std::string>() + " " + m[1].get<std::string>();
    const size_t sp = s.find(' ');
    if (sp == std::string::npos) continue;
    const std::string a = s.substr(0, sp), b = s.substr(sp + 1);
    if (vocab.contains(a) && vocab.contains(b) && vocab.contains(a + b)) merges.push_back(s);
  }
  model["vocab"] = std::move(vocab);
  model["merges"] = std::move(merges);
  Json added = Json::array();
  int high = 0;
  for (Json a : t.at("added_tokens")) {
    if (a.at("id").get<int64_t>() >= kTokenizerIds) {
      if (high == kHighAddedTokens) continue;
      a["id"] = kTokenizerIds + high++;
    }
    added.push_back(std::move(a));
  }
  t["added_tokens"] = std::move(added);
  return WriteText(out / "deepseek_v3_first_ids.json", t.dump());
}

Status Run(const fs::path& repo, const fs::path& out) {
  for (const char* d : {"safetensors", "model_config", "tokenizer", "server_config", "checksums",
                        "hash_vectors", "http", "chat_template", ".work"}) {
    std::error_code ec;
    fs::create_directories(out / d, ec);
    if (ec) return Unavailable("cannot create {}: {}", (out / d).string(), ec.message());
  }
  for (const auto& e : fs::directory_iterator(repo / "configs")) {
    if (e.path().extension() == ".yaml") {
      ENGRAM_RETURN_IF_ERROR(Copy(e.path(), out / "server_config" / e.path().filename()));
    }
  }
  ENGRAM_RETURN_IF_ERROR(Copy(repo / "tests/data/demo_default_config.json",
                              out / "hash_vectors/demo_default_config.json"));
  // Committed small seeds, one folder per target.
  for (const char* d : {"safetensors", "model_config", "tokenizer", "server_config", "checksums",
                        "hash_vectors", "http"}) {
    ENGRAM_RETURN_IF_ERROR(CopyAll(repo / "tests/fuzz/seeds" / d, out / d));
  }
  // The real chat templates of the tokenizer fixtures.
  for (const char* pkg : {"deepseek_v3", "llama3", "llama3_1", "qwen3", "gemma3"}) {
    const fs::path cfg = repo / "tests/fixtures/tokenizer/node_modules/@lenml" /
                         (std::string("tokenizer-") + pkg) / "models/tokenizer_config.json";
    ENGRAM_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(cfg.string(), kMaxSidecarFileBytes,
                                                           "tokenizer_config.json"));
    if (j.contains("chat_template") && j["chat_template"].is_string()) {
      ENGRAM_RETURN_IF_ERROR(WriteText(out / "chat_template" / (std::string(pkg) + ".jinja"),
                                       j["chat_template"].get<std::string>()));
    }
  }
  ENGRAM_RETURN_IF_ERROR(SynthSeeds(out, out / ".work"));
  ENGRAM_RETURN_IF_ERROR(SmallSafetensors(out / "safetensors"));
  ENGRAM_RETURN_IF_ERROR(TokenizerSeeds(repo, out / "tokenizer"));
  std::error_code ec;
  fs::remove_all(out / ".work", ec);
  return Status::Ok();
}

}  // namespace
}  // namespace engram

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fuzz_seeds REPO_ROOT OUT_DIR\n");
    return 2;
  }
  (void)engram::SetLogLevel("warn");
  const engram::Status st = engram::Run(argv[1], argv[2]);
  if (!st.ok()) {
    std::fprintf(stderr, "fuzz_seeds: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
