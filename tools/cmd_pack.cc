// engram pack synth: writes a random-weight Engram model directory from a preset.
// engram pack checksum / verify: writes or checks a model directory's engram_checksums.json.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "args.h"
#include "commands.h"
#include "model/synth.h"
#include "model/table_checksum.h"
#include "text/compression_builder.h"
#include "text/tokenizer.h"

namespace engram::cli {
namespace {

Status WriteCompressionMap(const std::string& tokenizer_path, const std::string& out) {
  ENGRAM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::Load(tokenizer_path));
  ENGRAM_ASSIGN_OR_RETURN(CompressionMap map, BuildCompressionMap(tok));
  std::FILE* f = std::fopen(out.c_str(), "w");
  if (!f) return ErrnoStatus(StatusCode::kPermissionDenied, "cannot write " + out, errno);
  std::string text =
      fmt::format("{{\"vocab_size\":{},\"num_compressed\":{},\"lookup\":[{}]}}\n", map.vocab_size(),
                  map.num_compressed(), fmt::join(map.lookup(), ","));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok)
    return ErrnoStatus(StatusCode::kDataLoss, "short write to " + out, errno);
  return Status::Ok();
}

}  // namespace

namespace {

namespace fs = std::filesystem;

void PackUsage() {
  std::fprintf(
      stderr,
      "usage: engram pack synth --preset NAME --out DIR [--seed S] [--dtype bf16|f32]\n"
      "                         [--tables bf16|f32|fp8] [--table-gb X]\n"
      "                         [--tokenizer tokenizer.json] [--force]\n"
      "       engram pack quantize --model DIR --out DIR2 [--tables fp8]\n"
      "                            [--weights int8|fp8 [--keep-lm-head] [--keep-engram]] "
      "[--threads N]\n"
      "       engram pack checksum --model DIR [--threads N] [--chunk-bytes B]\n"
      "       engram pack verify --model DIR [--threads N]\n"
      "  presets: %s\n"
      "  --dtype        the backbone's weights (default bf16)\n"
      "  --tables       the Engram tables (default: fp8 for the -v41 presets, else\n"
      "                 --dtype); fp8 = E4M3 with an E8M0 scale per 32 values\n"
      "  --table-gb X   total bytes (GB = 1e9) of the Engram tables of all layers\n"
      "  --tokenizer F  copy F into DIR; vocab_size follows the tokenizer\n"
      "  --force        write into a non-empty DIR\n"
      "  checksum       (re)writes DIR/engram_checksums.json for the Engram tables\n"
      "  verify         checks the tensors DIR/engram_checksums.json lists (exit 1 on\n"
      "                 a mismatch or a bad file)\n"
      "  quantize       copies DIR to DIR2 with its BF16/F16/F32 Engram tables as FP8 rows\n"
      "                 (per-32 scales from each block's largest value, round to\n"
      "                 nearest even, saturating), and writes DIR2's checksums; and/or\n"
      "                 with its Linear weights quantized: --weights int8 (I8, an F32\n"
      "                 scale per row per 32 inputs) or fp8 (E4M3, per 128x128 block)\n"
      "  --threads N    hashing / quantizing threads (default min(cores, 8))\n",
      fmt::format("{}", fmt::join(SynthPresetNames(), ", ")).c_str());
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "engram pack: %s\n", message.c_str());
  PackUsage();
  return 2;
}

// --threads N (0 = default); a usage error message otherwise.
Result<int> ThreadsOption(const Args& args) {
  auto threads = args.GetInt("threads", 0);
  if (!threads.ok()) return threads.status();
  if (*threads < 0 || *threads > 1024) {
    return InvalidArgument("--threads {} is out of range (expected 0..1024)", *threads);
  }
  return static_cast<int>(*threads);
}

// The options of `pack checksum` / `pack verify`: --model DIR, --threads N and `extra`.
struct ModelCommand {
  std::optional<Args> args;
  std::string model;
  int threads = 0;
};

// Fills `c`; returns the exit code when the command is already done (--help: 0, a usage
// error: 2), nothing when it should run.
std::optional<int> ParseModelCommand(int argc, char** argv, std::set<std::string> extra,
                                     ModelCommand& c) {
  extra.insert({"model", "threads"});
  auto args = Args::Parse(argc, argv, 3, extra, {"help"});
  if (!args.ok()) return UsageError(args.status().message());
  if (args->Flag("help")) {
    PackUsage();
    return 0;
  }
  if (!args->positional().empty()) {
    return UsageError(fmt::format("unexpected argument \"{}\"", args->positional()[0]));
  }
  auto model = args->Require("model");
  if (!model.ok()) return UsageError(model.status().message());
  auto threads = ThreadsOption(*args);
  if (!threads.ok()) return UsageError(threads.status().message());
  c.model = *model;
  c.threads = *threads;
  c.args = std::move(args).value();
  return std::nullopt;
}

// engram pack checksum --model DIR [--threads N] [--chunk-bytes B]
int RunPackChecksum(int argc, char** argv) {
  ModelCommand c;
  if (auto exit = ParseModelCommand(argc, argv, {"chunk-bytes"}, c)) return *exit;
  auto chunk = c.args->GetInt("chunk-bytes", static_cast<long long>(kDefaultChecksumChunkBytes));
  if (!chunk.ok()) return UsageError(chunk.status().message());
  if (*chunk <= 0) return UsageError(fmt::format("--chunk-bytes {} must be positive", *chunk));
  ChecksumReport report;
  Status st = WriteTableChecksums(c.model, c.threads, {}, static_cast<uint64_t>(*chunk), &report);
  if (!st.ok()) {
    std::fprintf(stderr, "engram pack checksum: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s: %d tensors, %.3f GB hashed in %.2f s (%.2f GB/s)\n",
              (fs::path(c.model) / kTableChecksumsFile).string().c_str(), report.tensors,
              report.bytes / 1e9, report.seconds,
              report.seconds > 0 ? report.bytes / 1e9 / report.seconds : 0.0);
  return 0;
}

// engram pack verify --model DIR [--threads N]
int RunPackVerify(int argc, char** argv) {
  ModelCommand c;
  if (auto exit = ParseModelCommand(argc, argv, {}, c)) return *exit;
  // Only the safetensors headers are needed: no config validation, no tokenizer.
  auto store = TensorStore::OpenDirectory(c.model);
  if (!store.ok()) {
    std::fprintf(stderr, "engram pack verify: %s\n", store.status().ToString().c_str());
    return 1;
  }
  ChecksumReport report;
  Status st = VerifyTableChecksums(*store, c.model, {}, c.threads, &report);
  if (!st.ok()) {
    std::fprintf(stderr, "engram pack verify: %s\n", st.ToString().c_str());
    return 1;
  }
  if (!report.file_present) {
    std::printf("OK: %s has no %s; nothing to verify\n", c.model.c_str(),
                std::string(kTableChecksumsFile).c_str());
    return 0;
  }
  std::printf("OK: %d tensors match %s (%.3f GB in %.2f s, %.2f GB/s)\n", report.tensors,
              (fs::path(c.model) / kTableChecksumsFile).string().c_str(), report.bytes / 1e9,
              report.seconds, report.seconds > 0 ? report.bytes / 1e9 / report.seconds : 0.0);
  return 0;
}

}  // namespace

int RunPack(int argc, char** argv) {
  if (argc < 3 || std::string(argv[2]) == "--help" || std::string(argv[2]) == "-h") {
    PackUsage();
    return argc < 3 ? 2 : 0;
  }
  const std::string source = argv[2];
  if (source == "checksum") return RunPackChecksum(argc, argv);
  if (source == "verify") return RunPackVerify(argc, argv);
  if (source == "quantize") return RunPackQuantize(argc, argv);
  if (source != "synth") {
    return UsageError(fmt::format(
        "unknown pack source \"{}\" (expected: synth, checksum, verify, quantize)", argv[2]));
  }
  auto args = Args::Parse(argc, argv, 3,
                          {"preset", "out", "seed", "dtype", "tables", "table-gb", "tokenizer"},
                          {"force", "help"});
  if (!args.ok()) return UsageError(args.status().message());
  if (args->Flag("help")) {
    PackUsage();
    return 0;
  }
  if (!args->positional().empty()) {
    return UsageError(fmt::format("unexpected argument \"{}\"", args->positional()[0]));
  }
  SynthOptions options;
  auto preset = args->Require("preset");
  if (!preset.ok()) return UsageError(preset.status().message());
  options.preset = *preset;
  const auto names = SynthPresetNames();
  if (std::find(names.begin(), names.end(), options.preset) == names.end()) {
    return UsageError(
        fmt::format("unknown preset \"{}\" (presets: {})", options.preset, fmt::join(names, ", ")));
  }
  auto out = args->Require("out");
  if (!out.ok()) return UsageError(out.status().message());
  auto seed = args->GetInt("seed", 0);
  if (!seed.ok()) return UsageError(seed.status().message());
  if (*seed < 0) return UsageError(fmt::format("--seed {} must not be negative", *seed));
  options.seed = static_cast<uint64_t>(*seed);
  if (auto dtype = args->Get("dtype")) {
    auto dt = ParseSynthDType(*dtype);
    if (!dt.ok()) return UsageError("--dtype: " + dt.status().message());
    options.dtype = *dt;
  }
  if (auto tables = args->Get("tables")) {
    auto dt = ParseSynthTableDType(*tables);
    if (!dt.ok()) return UsageError("--tables: " + dt.status().message());
    options.table_dtype = *dt;
  }
  if (args->Has("table-gb")) {
    auto gb = args->GetDouble("table-gb", 0);
    if (!gb.ok()) return UsageError(gb.status().message());
    if (!(*gb > 0)) return UsageError(fmt::format("--table-gb {} must be positive", *gb));
    options.table_gb = *gb;
  }
  if (auto tok = args->Get("tokenizer")) options.tokenizer_path = *tok;

  std::error_code ec;
  if (fs::exists(*out, ec)) {
    if (!fs::is_directory(*out, ec)) {
      std::fprintf(stderr, "engram pack: %s exists and is not a directory\n", out->c_str());
      return 1;
    }
    if (!fs::is_empty(*out, ec) && !args->Flag("force")) {
      std::fprintf(stderr,
                   "engram pack: output directory %s is not empty; refusing to overwrite "
                   "(use --force)\n",
                   out->c_str());
      return 1;
    }
  }

  auto config = SynthConfig(options);
  if (!config.ok()) {
    std::fprintf(stderr, "engram pack: %s\n", config.status().ToString().c_str());
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  if (Status st = WriteSynthModel(options, *out); !st.ok()) {
    std::fprintf(stderr, "engram pack: %s\n", st.ToString().c_str());
    return 1;
  }
  if (!options.tokenizer_path.empty()) {
    // The Engram compression map, computed natively from the tokenizer (DESIGN.md rules).
    Status st = WriteCompressionMap(options.tokenizer_path,
                                    (fs::path(*out) / "engram_compression.json").string());
    if (!st.ok()) {
      std::fprintf(stderr, "engram pack: %s\n", st.ToString().c_str());
      return 1;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t bytes = 0;
  for (const auto& entry : fs::directory_iterator(*out, ec)) {
    if (entry.path().extension() == ".safetensors") bytes += entry.file_size(ec);
  }
  std::printf(
      "wrote synth:%s (seed %llu, %s) to %s: %.3f GB of safetensors in %.2f s (%.2f GB/s)\n",
      options.preset.c_str(), static_cast<unsigned long long>(options.seed),
      std::string(DTypeName(options.dtype)).c_str(), out->c_str(), bytes / 1e9, seconds,
      seconds > 0 ? bytes / 1e9 / seconds : 0.0);
  return 0;
}

}  // namespace engram::cli
