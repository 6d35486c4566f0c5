// engram hash: fills in a test-vector file (the format of tests/data/demo_default_config.json)
// with NgramHasher's output (hash_vectors.h has the format), so a vectors file written by the
// reference (Python) and one written here can be compared byte for byte.
#include <cstdio>
#include <fstream>
#include <string>

#include "args.h"
#include "commands.h"
#include "common/file_read.h"
#include "hash_vectors.h"

namespace engram::cli {
namespace {

constexpr const char kUsage[] =
    "usage: engram hash --vectors FILE.json [--out FILE]\n"
    "  Reads a vectors file (\"config\": the reference EngramConfig keys, \"cases\": [{\"name\",\n"
    "  \"input_ids\": [B][T]}], optional \"compression_table\" relative to the file, else the\n"
    "  identity over config.vocab_size) and writes it back with compressed_vocab_size,\n"
    "  pad_id_compressed, layers{multipliers, primes} and each case's compressed_ids and\n"
    "  hashes{layer: [b][t][h]} filled in (stdout, or --out FILE).\n";

Result<std::string> Run(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(std::string text,
                          ReadRegularFile(path, kMaxVectorsFileBytes, "vectors file"));
  return FillVectors(text, path);
}

}  // namespace

int RunHash(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, 2, {"vectors", "out"}, {"help"});
  if (!args.ok()) {
    std::fprintf(stderr, "engram hash: %s\n%s", args.status().message().c_str(), kUsage);
    return 2;
  }
  if (args->Flag("help")) {
    std::fprintf(stdout, "%s", kUsage);
    return 0;
  }
  if (!args->positional().empty() || !args->Has("vectors")) {
    std::fprintf(stderr, "engram hash: %s\n%s",
                 args->Has("vectors") ? "unexpected positional argument" : "missing --vectors FILE",
                 kUsage);
    return 2;
  }
  auto result = Run(*args->Get("vectors"));
  if (!result.ok()) {
    std::fprintf(stderr, "engram hash: %s\n", result.status().ToString().c_str());
    return 1;
  }
  if (auto out_path = args->Get("out")) {
    std::ofstream out(*out_path, std::ios::binary | std::ios::trunc);
    out << *result;
    out.close();
    if (!out) {
      std::fprintf(stderr, "engram hash: cannot write %s\n", out_path->c_str());
      return 1;
    }
    return 0;
  }
  std::fwrite(result->data(), 1, result->size(), stdout);
  std::fputc('\n', stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace engram::cli
