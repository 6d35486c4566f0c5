// Filling in an Engram hash test-vector file (the format of tests/data/demo_default_config.json)
// with NgramHasher's output, so a vectors file written by the reference (Python) and one written
// here can be compared byte for byte. `engram hash --vectors` reads the file and calls this; the
// fuzz target tests/fuzz/fuzz_hash_vectors.cc calls it on raw bytes.
//
// Input: {"about": ..., "compression_table"?: "map.json" (relative to the file), "config":
// {reference EngramConfig keys, optional vocab_size}, "cases": [{"name", "input_ids": [B][T]}]}.
// Output: the same object with compressed_vocab_size, pad_id_compressed, layers{multipliers,
// primes} and every case's compressed_ids and hashes{layer: [b][t][h]}, formatted like
// Python's json.dumps (", " and ": " separators, ASCII escapes), keys in the fixture's order.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "text/compression_map.h"

namespace engram::cli {

// Loads the compression table a vectors file names: `path` is its "compression_table" joined to
// the vectors file's directory, `vocab_size` is config.vocab_size (0 when absent).
using CompressionTableLoader =
    std::function<Result<CompressionMap>(const std::string& path, int64_t vocab_size)>;

// The vectors file `text` filled in. `origin` (the file's path) prefixes every error, and
// compression_table is resolved against its directory. `load_table` reads that table (empty:
// CompressionMap::LoadJson). Malformed JSON (nesting deeper than kMaxJsonDepth included), a
// missing or mistyped key or an id outside the vocabulary is INVALID_ARGUMENT or OUT_OF_RANGE
// naming the key; no exception escapes.
Result<std::string> FillVectors(std::string_view text, const std::string& origin,
                                const CompressionTableLoader& load_table = {});

}  // namespace engram::cli
