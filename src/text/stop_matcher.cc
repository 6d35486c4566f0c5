#include "text/stop_matcher.h"

#include <algorithm>

#include "text/utf8.h"

namespace engram {

Status StopMatcher::Validate(std::span<const std::string> stops) {
  if (stops.size() > kMaxStops) {
    return InvalidArgument("stop has {} strings; at most {} are allowed", stops.size(), kMaxStops);
  }
  for (size_t i = 0; i < stops.size(); ++i) {
    if (stops[i].empty()) return InvalidArgument("stop[{}] is an empty string", i);
    if (stops[i].size() > kMaxStopBytes) {
      return InvalidArgument("stop[{}] is {} bytes long; at most {} are allowed", i,
                             stops[i].size(), kMaxStopBytes);
    }
    const size_t bad = utf8::FirstInvalid(stops[i]);
    if (bad != utf8::kValid) {
      return InvalidArgument("stop[{}] is not valid UTF-8 (at byte offset {})", i, bad);
    }
  }
  return Status::Ok();
}

Result<StopMatcher> StopMatcher::Create(std::vector<std::string> stops) {
  ENGRAM_RETURN_IF_ERROR(Validate(stops));
  return StopMatcher(std::move(stops));
}

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (size_t i = 0; i < stops.size(); ++i) {
    if (stops[i].empty()) continue;
    Stop s;
    s.text = std::move(stops[i]);
    s.index = static_cast<int>(i);
    s.fail.assign(s.text.size(), 0);
    for (uint32_t q = 1, k = 0; q < s.text.size(); ++q) {
      while (k > 0 && s.text[q] != s.text[k]) k = s.fail[k - 1];
      if (s.text[q] == s.text[k]) ++k;
      s.fail[q] = k;
    }
    stops_.push_back(std::move(s));
  }
}

StopMatcher::Delta StopMatcher::Push(std::string_view text) {
  Delta out;
  if (stopped()) {
    out.stopped = true;
    return out;
  }
  const size_t base = held_.size();
  held_.append(text);
  for (size_t j = base; j < held_.size(); ++j) {
    const char c = held_[j];
    const Stop* hit = nullptr;
    for (Stop& s : stops_) {
      uint32_t k = s.state;
      while (k > 0 && s.text[k] != c) k = s.fail[k - 1];
      if (s.text[k] == c) ++k;
      s.state = k;
      if (k == s.text.size() && (hit == nullptr || k > hit->text.size())) hit = &s;
    }
    if (hit != nullptr) {
      matched_ = hit->index;
      held_.resize(j + 1 - hit->text.size());
      out.text = std::move(held_);
      held_.clear();
      out.stopped = true;
      return out;
    }
  }
  uint32_t hold = 0;
  for (const Stop& s : stops_) hold = std::max(hold, s.state);
  const size_t emit = held_.size() - hold;
  out.text.assign(held_, 0, emit);
  held_.erase(0, emit);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out = stopped() ? std::string() : std::move(held_);
  held_.clear();
  matched_ = -1;
  for (Stop& s : stops_) s.state = 0;
  return out;
}

}  // namespace engram
