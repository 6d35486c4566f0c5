// Fuzzes the `engram hash --vectors` file parser and filler (cli::FillVectors). The
// compression_table a file names is never read from disk: a fixed in-memory map stands in
// (raw id i -> i / 2 over config.vocab_size, or DeepSeek-V3's 129280 ids without it), so the
// fuzzer cannot wander the file system. A file that fills in must be valid JSON, and filling
// in the output again must give the output byte for byte (the fixture test's property).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "hash_vectors.h"
#include "text/compression_map.h"

namespace {

constexpr const char kOrigin[] = "/nonexistent-engram-fuzz/vectors.json";
constexpr int64_t kDefaultVocab = 129280;   // DeepSeek-V3, the fixture's tokenizer
constexpr int64_t kMaxFuzzVocab = 1 << 20;  // the stand-in map stays small

engram::Result<engram::CompressionMap> StandInTable(const std::string& path, int64_t vocab) {
  if (vocab == 0) vocab = kDefaultVocab;
  if (vocab > kMaxFuzzVocab) {
    return engram::InvalidArgument("{}: vocab {} is larger than the fuzz stand-in map", path,
                                   vocab);
  }
  std::vector<int64_t> lookup(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) lookup[static_cast<size_t>(i)] = i / 2;
  return engram::CompressionMap::FromLookup(std::move(lookup), (vocab + 1) / 2);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engram::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto filled = engram::cli::FillVectors(text, kOrigin, StandInTable);
  engram::fuzz::Note("FillVectors", filled.status());
  if (!filled.ok()) return 0;
  if (!nlohmann::json::accept(*filled)) {
    engram::fuzz::Fail("FillVectors output is not valid JSON:\n" + *filled);
  }
  auto again = engram::cli::FillVectors(*filled, kOrigin, StandInTable);
  if (!again.ok()) {
    engram::fuzz::Fail("FillVectors output does not fill in again: " + again.status().ToString() +
                       "\n" + *filled);
  }
  if (*again != *filled) {
    engram::fuzz::Fail("filling in the output changes it:\n" + *filled + "\n" + *again);
  }
  return 0;
}
