#include "text/pretokenizer.h"

#include <nlohmann/json.hpp>

#include <optional>

#include "text/pcre_regex.h"

namespace engram {

namespace {

// GPT-2's pattern, used by ByteLevel with use_regex.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

std::optional<Behavior> ParseBehavior(const std::string& s) {
  if (s == "Removed") return Behavior::kRemoved;
  if (s == "Isolated") return Behavior::kIsolated;
  if (s == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::kMergedWithNext;
  if (s == "Contiguous") return Behavior::kContiguous;
  return std::nullopt;
}

struct Segment {
  size_t begin, end;
  bool is_match;
};

}  // namespace

struct PreTokenizer::Step {
  enum class Kind { kSplit, kByteLevel };
  Kind kind = Kind::kSplit;
  std::unique_ptr<PcreRegex> regex;  // Split pattern, or GPT-2's for ByteLevel+use_regex
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
};

Status PreTokenizer::AddSteps(const nlohmann::json& j,
                              std::vector<std::shared_ptr<const Step>>* out) {
  if (j.is_null()) return Status::Ok();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return InvalidArgument("pre_tokenizer: expected an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) {
      return InvalidArgument("pre_tokenizer Sequence: expected an array \"pretokenizers\"");
    }
    for (const auto& sub : *it) ENGRAM_RETURN_IF_ERROR(AddSteps(sub, out));
    return Status::Ok();
  }
  auto step = std::make_shared<Step>();
  if (type == "Split") {
    step->kind = Step::Kind::kSplit;
    auto pat = j.find("pattern");
    if (pat == j.end() || !pat->is_object()) {
      return InvalidArgument("pre_tokenizer Split: expected an object \"pattern\"");
    }
    if (pat->contains("Regex") && (*pat)["Regex"].is_string()) {
      ENGRAM_ASSIGN_OR_RETURN(PcreRegex re, PcreRegex::Compile((*pat)["Regex"].get<std::string>()));
      step->regex = std::make_unique<PcreRegex>(std::move(re));
    } else if (pat->contains("String") && (*pat)["String"].is_string()) {
      ENGRAM_ASSIGN_OR_RETURN(PcreRegex re,
                              PcreRegex::Literal((*pat)["String"].get<std::string>()));
      step->regex = std::make_unique<PcreRegex>(std::move(re));
    } else {
      return InvalidArgument("pre_tokenizer Split: pattern needs a string \"Regex\" or \"String\"");
    }
    const std::string behavior = j.value("behavior", std::string());
    const auto b = ParseBehavior(behavior);
    if (!b) {
      return InvalidArgument(
          "pre_tokenizer Split: unknown behavior \"{}\" (expected Removed, Isolated, "
          "MergedWithPrevious, MergedWithNext or Contiguous)",
          behavior);
    }
    step->behavior = *b;
    step->invert = j.value("invert", false);
  } else if (type == "ByteLevel") {
    step->kind = Step::Kind::kByteLevel;
    step->add_prefix_space = j.value("add_prefix_space", true);
    if (j.value("use_regex", true)) {
      ENGRAM_ASSIGN_OR_RETURN(PcreRegex re, PcreRegex::Compile(kGpt2Pattern));
      step->regex = std::make_unique<PcreRegex>(std::move(re));
    }
  } else {
    return Unimplemented(
        "pre_tokenizer type \"{}\" is not supported (supported: Sequence, Split, ByteLevel)", type);
  }
  out->push_back(std::move(step));
  return Status::Ok();
}

Result<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& j) {
  PreTokenizer p;
  ENGRAM_RETURN_IF_ERROR(AddSteps(j, &p.steps_));
  for (size_t i = 0; i < p.steps_.size(); ++i) {
    if (p.steps_[i]->kind != Step::Kind::kByteLevel) continue;
    if (i + 1 != p.steps_.size()) {
      return Unimplemented("pre_tokenizer: ByteLevel is supported only as the last step");
    }
    p.byte_level_ = true;
  }
  return p;
}

namespace {

// HF's NormalizedString::split: turns the match segments into pieces by `behavior`.
void ApplyBehavior(std::string_view piece, const std::vector<Segment>& segs, Behavior behavior,
                   std::vector<std::string_view>* out) {
  auto emit = [&](size_t b, size_t e) {
    if (e > b) out->push_back(piece.substr(b, e - b));
  };
  switch (behavior) {
    case Behavior::kIsolated:
      for (const auto& s : segs) emit(s.begin, s.end);
      return;
    case Behavior::kRemoved:
      for (const auto& s : segs) {
        if (!s.is_match) emit(s.begin, s.end);
      }
      return;
    case Behavior::kContiguous:
    case Behavior::kMergedWithPrevious: {
      // Contiguous joins runs of equal kind; MergedWithPrevious joins a match to what precedes.
      std::vector<std::pair<size_t, size_t>> acc;
      bool prev_match = false;
      for (const auto& s : segs) {
        const bool join = behavior == Behavior::kContiguous ? s.is_match == prev_match
                                                            : s.is_match && !prev_match;
        if (join && !acc.empty()) {
          acc.back().second = s.end;
        } else {
          acc.emplace_back(s.begin, s.end);
        }
        prev_match = s.is_match;
      }
      for (const auto& [b, e] : acc) emit(b, e);
      return;
    }
    case Behavior::kMergedWithNext: {
      std::vector<std::pair<size_t, size_t>> acc;  // built back to front
      bool prev_match = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !prev_match && !acc.empty()) {
          acc.back().first = it->begin;
        } else {
          acc.emplace_back(it->begin, it->end);
        }
        prev_match = it->is_match;
      }
      for (auto it = acc.rbegin(); it != acc.rend(); ++it) emit(it->first, it->second);
      return;
    }
  }
}

}  // namespace

Status PreTokenizer::Split(std::string_view text, std::vector<std::string_view>* pieces,
                           std::deque<std::string>* arena) const {
  if (text.empty()) return Status::Ok();
  std::vector<std::string_view> cur{text}, next;
  std::vector<std::pair<size_t, size_t>> matches;
  std::vector<Segment> segs;
  for (const auto& step : steps_) {
    next.clear();
    for (std::string_view piece : cur) {
      if (step->kind == Step::Kind::kByteLevel && step->add_prefix_space && piece[0] != ' ') {
        arena->push_back(" ");
        arena->back().append(piece);
        piece = arena->back();
      }
      if (!step->regex) {
        next.push_back(piece);
        continue;
      }
      matches.clear();
      ENGRAM_RETURN_IF_ERROR(step->regex->FindAll(piece, &matches));
      const bool invert = step->kind == Step::Kind::kSplit && step->invert;
      segs.clear();
      size_t prev = 0;
      for (const auto& [b, e] : matches) {
        if (b > prev) segs.push_back({prev, b, invert});
        segs.push_back({b, e, !invert});
        prev = e;
      }
      if (prev < piece.size()) segs.push_back({prev, piece.size(), invert});
      const Behavior behavior =
          step->kind == Step::Kind::kSplit ? step->behavior : Behavior::kIsolated;
      ApplyBehavior(piece, segs, behavior, &next);
    }
    cur.swap(next);
  }
  pieces->insert(pieces->end(), cur.begin(), cur.end());
  return Status::Ok();
}

}  // namespace engram
