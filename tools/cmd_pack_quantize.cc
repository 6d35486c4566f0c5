// engram pack quantize --model DIR --out DIR2 --tables fp8 [--threads N]: the model with its
// Engram tables re-stored as FP8 rows (model/table_quantize.h), and the rate it ran at.
#include <cstdio>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "args.h"
#include "commands.h"
#include "model/table_quantize.h"

namespace engram::cli {

int RunPackQuantize(int argc, char** argv) {
  auto usage = [](const std::string& message) {
    std::fprintf(stderr,
                 "engram pack quantize: %s\n"
                 "usage: engram pack quantize --model DIR --out DIR2 --tables fp8 [--threads N]\n"
                 "                            [--force] [--quiet]\n",
                 message.c_str());
    return 2;
  };
  auto args = Args::Parse(argc, argv, 3, {"model", "out", "tables", "threads"}, {"force", "quiet"});
  if (!args.ok()) return usage(args.status().message());
  if (!args->positional().empty()) {
    return usage(fmt::format("unexpected argument \"{}\"", args->positional()[0]));
  }
  auto model = args->Require("model");
  if (!model.ok()) return usage(model.status().message());
  auto out = args->Require("out");
  if (!out.ok()) return usage(out.status().message());
  auto tables = args->Require("tables");
  if (!tables.ok()) return usage(tables.status().message());
  if (*tables != "fp8") {
    return usage(
        fmt::format("--tables {}: only fp8 (E4M3 rows with E8M0 scales) is supported", *tables));
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
  QuantizeOptions o;
  o.threads = static_cast<int>(*threads);
  o.progress = !args->Flag("quiet");
  auto report = QuantizeModelTables(*model, *out, o);
  if (!report.ok()) {
    std::fprintf(stderr, "engram pack: %s\n", report.status().ToString().c_str());
    return 1;
  }
  const QuantizeReport& r = *report;
  std::printf(
      "quantized %d Engram tables of %s to FP8 in %s: %.3f GB -> %.3f GB (codes + scales) in "
      "%.2f s (%.2f GB/s of tables read); %.3f GB copied; %.2f s in all\n",
      r.tables, model->c_str(), out->c_str(), r.table_bytes_in / 1e9, r.table_bytes_out / 1e9,
      r.quantize_seconds, r.quantize_seconds > 0 ? r.table_bytes_in / 1e9 / r.quantize_seconds : 0,
      r.copied_bytes / 1e9, r.total_seconds);
  return 0;
}

}  // namespace engram::cli
