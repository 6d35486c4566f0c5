// engram pack quantize --model DIR --out DIR2 [--tables fp8] [--weights int8|fp8]
// [--keep-lm-head] [--threads N]: the model with its Engram tables re-stored as FP8 rows
// (model/table_quantize.h) and/or its Linear weights quantized (model/weight_quantize.h), and the
// rate it ran at.
#include <cstdio>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "args.h"
#include "commands.h"
#include "model/table_quantize.h"
#include "model/weight_quantize.h"

namespace engram::cli {
namespace {

void PrintTablesReport(const std::string& model, const std::string& out, const QuantizeReport& r) {
  std::printf(
      "quantized %d Engram tables of %s to FP8 in %s: %.3f GB -> %.3f GB (codes + scales) in "
      "%.2f s (%.2f GB/s of tables read); %.3f GB copied; %.2f s in all\n",
      r.tables, model.c_str(), out.c_str(), r.table_bytes_in / 1e9, r.table_bytes_out / 1e9,
      r.quantize_seconds, r.quantize_seconds > 0 ? r.table_bytes_in / 1e9 / r.quantize_seconds : 0,
      r.copied_bytes / 1e9, r.total_seconds);
}

void PrintWeightsReport(const std::string& model, const std::string& out, WeightFormat format,
                        const WeightQuantizeReport& r) {
  const std::string tables =
      r.tables > 0 ? fmt::format(" and {} Engram tables to FP8 ({:.3f} GB -> {:.3f} GB)", r.tables,
                                 r.table_bytes_in / 1e9, r.table_bytes_out / 1e9)
                   : std::string();
  const double read = (r.weight_bytes_in + r.table_bytes_in) / 1e9;
  std::printf(
      "quantized %d Linear weights of %s to %s%s in %s: %.3f GB -> %.3f GB (codes + scales) in "
      "%.2f s (%.2f GB/s of %s read); %.3f GB copied; %.2f s in all\n",
      r.weights, model.c_str(), std::string(WeightFormatName(format)).c_str(), tables.c_str(),
      out.c_str(), r.weight_bytes_in / 1e9, r.weight_bytes_out / 1e9, r.quantize_seconds,
      r.quantize_seconds > 0 ? read / r.quantize_seconds : 0,
      r.tables > 0 ? "tables and weights" : "weights", r.copied_bytes / 1e9, r.total_seconds);
}

}  // namespace

int RunPackQuantize(int argc, char** argv) {
  auto usage = [](const std::string& message) {
    std::fprintf(
        stderr,
        "engram pack quantize: %s\n"
        "usage: engram pack quantize --model DIR --out DIR2 [--tables fp8]\n"
        "                            [--weights int8|fp8 [--keep-lm-head] [--keep-engram]]\n"
        "                            [--threads N] [--force] [--quiet]\n"
        "  --tables fp8      the Engram tables as E4M3 rows with an E8M0 scale per 32\n"
        "  --weights int8    the Linear weights as I8 with an F32 scale per row per 32\n"
        "  --weights fp8     the Linear weights as E4M3 with an F32 scale per 128x128\n"
        "  --keep-lm-head    leave lm_head.weight as it is\n"
        "  --keep-engram     leave the Engram value/key projections as they are\n"
        "  (at least one of --tables and --weights)\n",
        message.c_str());
    return 2;
  };
  auto args = Args::Parse(argc, argv, 3, {"model", "out", "tables", "weights", "threads"},
                          {"force", "quiet", "keep-lm-head", "keep-engram"});
  if (!args.ok()) return usage(args.status().message());
  if (!args->positional().empty()) {
    return usage(fmt::format("unexpected argument \"{}\"", args->positional()[0]));
  }
  auto model = args->Require("model");
  if (!model.ok()) return usage(model.status().message());
  auto out = args->Require("out");
  if (!out.ok()) return usage(out.status().message());
  const std::optional<std::string> tables = args->Get("tables");
  const std::optional<std::string> weights = args->Get("weights");
  if (!tables && !weights) return usage("nothing to do: give --tables fp8 and/or --weights");
  if (tables && *tables != "fp8") {
    return usage(
        fmt::format("--tables {}: only fp8 (E4M3 rows with E8M0 scales) is supported", *tables));
  }
  WeightQuantizeOptions wo;
  if (weights) {
    auto format = ParseWeightFormat(*weights);
    if (!format.ok()) return usage(fmt::format("--weights: {}", format.status().message()));
    wo.format = *format;
  }
  for (const char* keep : {"keep-lm-head", "keep-engram"}) {
    if (args->Flag(keep) && !weights) {
      return usage(fmt::format("--{} applies to --weights only", keep));
    }
  }
  auto threads = args->GetInt("threads", 0);
  if (!threads.ok()) return usage(threads.status().message());
  if (*threads < 0 || *threads > 1024) {
    return usage(fmt::format("--threads {} is out of range (expected 0..1024)", *threads));
  }
  std::error_code ec;
  if (std::filesystem::exists(*out, ec) && !std::filesystem::is_empty(*out, ec) &&
      !args->Flag("force")) {
    std::fprintf(stderr,
                 "engram pack: output directory %s is not empty; refusing to overwrite (use "
                 "--force)\n",
                 out->c_str());
    return 1;
  }
  auto failed = [](const Status& status) {
    std::fprintf(stderr, "engram pack: %s\n", status.ToString().c_str());
    return 1;
  };
  if (!weights) {
    QuantizeOptions o;
    o.threads = static_cast<int>(*threads);
    o.progress = !args->Flag("quiet");
    auto report = QuantizeModelTables(*model, *out, o);
    if (!report.ok()) return failed(report.status());
    PrintTablesReport(*model, *out, *report);
    return 0;
  }
  wo.keep_lm_head = args->Flag("keep-lm-head");
  wo.keep_engram = args->Flag("keep-engram");
  wo.tables_fp8 = tables.has_value();
  wo.threads = static_cast<int>(*threads);
  wo.progress = !args->Flag("quiet");
  auto report = QuantizeModelWeights(*model, *out, wo);
  if (!report.ok()) return failed(report.status());
  PrintWeightsReport(*model, *out, wo.format, *report);
  return 0;
}

}  // namespace engram::cli
