// Shared bits of the libFuzzer targets: quiet logs, a property failure that aborts (so
// libFuzzer records the input as a crash) with a message saying what did not hold, and
// ENGRAM_FUZZ_VERBOSE=1 to print each input's parse status (to see why seeds are refused).
#pragma once

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/status.h"

namespace engram::fuzz {

// Parsers may log warnings; thousands of executions a second of them hide the fuzzer's output.
inline void QuietLogs() { spdlog::set_level(spdlog::level::off); }

// A property the target checks did not hold: print `what` and abort.
[[noreturn]] inline void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz property failed: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

// Whether ENGRAM_FUZZ_VERBOSE is set.
inline bool Verbose() {
  static const bool verbose = std::getenv("ENGRAM_FUZZ_VERBOSE") != nullptr;
  return verbose;
}

// With ENGRAM_FUZZ_VERBOSE set, prints `what` and the status of parsing one input.
inline void Note(const char* what, const Status& status) {
  if (Verbose()) std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
}

}  // namespace engram::fuzz
