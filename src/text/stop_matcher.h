// StopMatcher: finds stop strings in streamed text and says which text is safe to emit.
//
// Fed successive text deltas (UTF-8, as StreamDecoder yields them), it holds back the
// longest tail of the text that could still be the start of a stop string, emitting the rest
// at once. When a stop string completes, the text before it is released, the stop string and
// everything after it are dropped, and the matcher stays stopped. The first stop to complete
// (earliest end in the text; at equal ends the longer one) wins, so the result does not
// depend on how the text is split into deltas. Matching is bytewise; stop strings that are
// valid UTF-8 only match, and only split the text, at character boundaries.
//
// Cost per delta: O(delta bytes * stops) (one KMP automaton per stop). One per sequence; not
// thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace engram {

class StopMatcher {
 public:
  static constexpr size_t kMaxStops = 16;
  static constexpr size_t kMaxStopBytes = 256;

  // INVALID_ARGUMENT for more than kMaxStops strings, or "stop[i]" empty, longer than
  // kMaxStopBytes or not valid UTF-8.
  static Status Validate(std::span<const std::string> stops);
  // Validate, then construct.
  static Result<StopMatcher> Create(std::vector<std::string> stops);
  // `stops` must pass Validate (empty strings are ignored here).
  explicit StopMatcher(std::vector<std::string> stops);

  struct Delta {
    std::string text;      // safe to emit now (possibly empty)
    bool stopped = false;  // a stop string has matched: generation should end
  };
  // Appends `text` to the generated text. After a stop, returns {"", true} and ignores text.
  Delta Push(std::string_view text);
  // At the end of generation without a stop: releases the held text and resets the matcher
  // for a new stream. After a stop: returns "" (and resets).
  std::string Flush();

  bool stopped() const { return matched_ >= 0; }
  // Index into the stops of the one that matched, or -1.
  int matched_stop() const { return matched_; }
  // Bytes held back as a possible stop-string start.
  size_t held_bytes() const { return held_.size(); }

 private:
  struct Stop {
    std::string text;
    int index = 0;               // in the constructor's list
    std::vector<uint32_t> fail;  // KMP failure function
    uint32_t state = 0;          // length of the longest stop prefix ending the text
  };
  std::vector<Stop> stops_;
  std::string held_;
  int matched_ = -1;
};

}  // namespace engram
