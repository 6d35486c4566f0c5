// Reading the small files engramd and `engram` take from users (model.yaml, config.json,
// tokenizer.json, JSON sidecars, vectors files) without trusting them: only regular files are
// read (a FIFO, /dev/zero or a directory is refused at once, never waited on), never more than
// a size limit that fits what the file is, and JSON is parsed with a nesting-depth limit.
// Every failure is a Status naming the file and what was expected.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace engram {

// Size limits of the files we read whole.
inline constexpr size_t kMaxConfigFileBytes = 4u << 20;  // model.yaml, config.json
inline constexpr size_t kMaxTokenizerFileBytes = 256u
                                                 << 20;     // tokenizer.json (DeepSeek-V3: 7.8 MB)
inline constexpr size_t kMaxSidecarFileBytes = 64u << 20;   // index, checksums, compression
inline constexpr size_t kMaxVectorsFileBytes = 256u << 20;  // `engram hash --vectors`
// Deepest nesting of arrays and objects accepted in any JSON file (real files: under 10).
inline constexpr int kMaxJsonDepth = 128;

// The whole of `path` if it is a regular file of at most `max_bytes`; `what` names the file's
// role in messages ("tokenizer.json", "model.yaml"). Opening does not block on FIFOs.
Result<std::string> ReadRegularFile(const std::string& path, size_t max_bytes,
                                    std::string_view what);

// Deepest nesting of `text` (arrays and objects, strings skipped); stops counting at `limit`+1.
int JsonNestingDepth(std::string_view text, int limit);

// Parses `text` as JSON: a syntax error, a number out of range (1e400) or nesting deeper than
// kMaxJsonDepth is an InvalidArgument naming `origin` and the position. No exception escapes.
Result<nlohmann::json> ParseJson(std::string_view text, const std::string& origin);

// ReadRegularFile + ParseJson.
Result<nlohmann::json> ReadJsonFile(const std::string& path, size_t max_bytes,
                                    std::string_view what);

}  // namespace engram
