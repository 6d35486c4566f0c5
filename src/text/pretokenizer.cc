#include "text/pretokenizer.h"

#include <nlohmann/json.hpp>

#include <optional>

#include "text/pcre_regex.h"
#include "text/utf8.h"

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
  enum class Kind { kSplit, kByteLevel, kMetaspace };
  enum class Prepend { kAlways, kFirst, kNever };
  Kind kind = Kind::kSplit;
  // Split pattern, GPT-2's for ByteLevel+use_regex, the replacement for Metaspace+split.
  std::unique_ptr<PcreRegex> regex;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  std::string replacement;        // Metaspace
  Prepend prepend = Prepend::kAlways;
};

// HF's Metaspace: {replacement, prepend_scheme = always|first|never, split = true}; the
// legacy add_prefix_space = false means never (HF refuses it beside another scheme).
Status PreTokenizer::ParseMetaspace(const nlohmann::json& j, Step* step) {
  step->kind = Step::Kind::kMetaspace;
  auto rep = j.find("replacement");
  if (rep == j.end() || !rep->is_string()) {
    return InvalidArgument(
        "pre_tokenizer Metaspace: expected a one-character string \"replacement\"");
  }
  step->replacement = rep->get<std::string>();
  size_t pos = 0;
  if (step->replacement.empty() || !utf8::IsValid(step->replacement) ||
      (utf8::Next(step->replacement, &pos), pos != step->replacement.size())) {
    return InvalidArgument("pre_tokenizer Metaspace: replacement \"{}\" is not one character",
                           step->replacement);
  }
  std::string scheme = "always";
  const bool has_scheme = j.contains("prepend_scheme") && !j["prepend_scheme"].is_null();
  if (has_scheme) {
    if (!j["prepend_scheme"].is_string()) {
      return InvalidArgument("pre_tokenizer Metaspace: \"prepend_scheme\" must be a string");
    }
    scheme = j["prepend_scheme"].get<std::string>();
  }
  if (auto it = j.find("add_prefix_space"); it != j.end() && it->is_boolean() && !it->get<bool>()) {
    if (has_scheme && scheme != "never") {
      return InvalidArgument(
          "pre_tokenizer Metaspace: add_prefix_space false does not match prepend_scheme \"{}\"",
          scheme);
    }
    scheme = "never";
  }
  if (scheme == "always") {
    step->prepend = Step::Prepend::kAlways;
  } else if (scheme == "first") {
    step->prepend = Step::Prepend::kFirst;
  } else if (scheme == "never") {
    step->prepend = Step::Prepend::kNever;
  } else {
    return InvalidArgument(
        "pre_tokenizer Metaspace: prepend_scheme \"{}\" (expected always, first or never)", scheme);
  }
  auto split = j.find("split");
  if (split == j.end() || split->is_null() || (split->is_boolean() && split->get<bool>())) {
    ENGRAM_ASSIGN_OR_RETURN(PcreRegex re, PcreRegex::Literal(step->replacement));
    step->regex = std::make_unique<PcreRegex>(std::move(re));
  } else if (!split->is_boolean()) {
    return InvalidArgument("pre_tokenizer Metaspace: \"split\" must be a boolean");
  }
  return Status::Ok();
}

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
  } else if (type == "Metaspace") {
    ENGRAM_RETURN_IF_ERROR(ParseMetaspace(j, step.get()));
  } else {
    return Unimplemented(
        "pre_tokenizer type \"{}\" is not supported (supported: Sequence, Split, ByteLevel, "
        "Metaspace)",
        type);
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
                           std::deque<std::string>* arena, bool at_start) const {
  if (text.empty()) return Status::Ok();
  // Each piece, and whether it starts where the text starts (Metaspace's "first").
  std::vector<std::string_view> cur{text}, next;
  std::vector<uint8_t> cur_first{static_cast<uint8_t>(at_start)}, next_first;
  std::vector<std::pair<size_t, size_t>> matches;
  std::vector<Segment> segs;
  for (const auto& step : steps_) {
    next.clear();
    next_first.clear();
    for (size_t pi = 0; pi < cur.size(); ++pi) {
      std::string_view piece = cur[pi];
      const bool first = cur_first[pi] != 0;
      if (step->kind == Step::Kind::kByteLevel && step->add_prefix_space && piece[0] != ' ') {
        arena->push_back(" ");
        arena->back().append(piece);
        piece = arena->back();
      }
      if (step->kind == Step::Kind::kMetaspace) {
        // HF: ' ' -> replacement, then the replacement prepended (always, or only to the
        // piece at the start of the text), then split before each replacement.
        const std::string& rep = step->replacement;
        const bool prepend = step->prepend == Step::Prepend::kAlways ||
                             (step->prepend == Step::Prepend::kFirst && first);
        const bool has_space = piece.find(' ') != std::string_view::npos;
        const bool add = prepend && piece[0] != ' ' && piece.substr(0, rep.size()) != rep;
        if (has_space || add) {
          std::string s;
          s.reserve(piece.size() + rep.size() + 8);
          if (add) s = rep;
          for (char c : piece) {
            if (c == ' ') {
              s += rep;
            } else {
              s += c;
            }
          }
          arena->push_back(std::move(s));
          piece = arena->back();
        }
      }
      const size_t before = next.size();
      if (!step->regex) {
        next.push_back(piece);
      } else {
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
        const Behavior behavior = step->kind == Step::Kind::kSplit       ? step->behavior
                                  : step->kind == Step::Kind::kMetaspace ? Behavior::kMergedWithNext
                                                                         : Behavior::kIsolated;
        ApplyBehavior(piece, segs, behavior, &next);
      }
      for (size_t k = before; k < next.size(); ++k) {
        next_first.push_back(first && next[k].data() == piece.data());
      }
    }
    cur.swap(next);
    cur_first.swap(next_first);
  }
  pieces->insert(pieces->end(), cur.begin(), cur.end());
  return Status::Ok();
}

}  // namespace engram
