#include "text/text_normalizer.h"

#include <nlohmann/json.hpp>

#include "text/pcre_regex.h"
#include "text/unicode_ops.h"

namespace engram {

struct TextNormalizer::Step {
  enum class Kind { kNormalForm, kLowercase, kStripAccents, kStrip, kReplace, kPrepend };
  Kind kind = Kind::kLowercase;
  unicode::NormalForm form = unicode::NormalForm::kNfc;
  bool left = true, right = true;
  std::unique_ptr<PcreRegex> pattern;
  std::string content;  // Replace: the replacement; Prepend: the prefix
};

namespace {

using Json = nlohmann::json;

Result<std::string> StringField(const Json& j, const char* key, std::string_view type) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return InvalidArgument("normalizer {}: expected a string \"{}\"", type, key);
  }
  return it->get<std::string>();
}

}  // namespace

Status TextNormalizer::AddSteps(const nlohmann::json& j,
                                std::vector<std::shared_ptr<const Step>>* out) {
  if (j.is_null()) return Status::Ok();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return InvalidArgument("normalizer: expected an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) {
      return InvalidArgument("normalizer Sequence: expected an array \"normalizers\"");
    }
    for (const auto& sub : *it) ENGRAM_RETURN_IF_ERROR(AddSteps(sub, out));
    return Status::Ok();
  }
  auto step = std::make_shared<Step>();
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    step->kind = Step::Kind::kNormalForm;
    step->form = type == "NFC"    ? unicode::NormalForm::kNfc
                 : type == "NFD"  ? unicode::NormalForm::kNfd
                 : type == "NFKC" ? unicode::NormalForm::kNfkc
                                  : unicode::NormalForm::kNfkd;
  } else if (type == "Lowercase") {
    step->kind = Step::Kind::kLowercase;
  } else if (type == "StripAccents") {
    step->kind = Step::Kind::kStripAccents;
  } else if (type == "Strip") {
    step->kind = Step::Kind::kStrip;
    step->left = j.value("strip_left", true);
    step->right = j.value("strip_right", true);
  } else if (type == "Prepend") {
    step->kind = Step::Kind::kPrepend;
    ENGRAM_ASSIGN_OR_RETURN(step->content, StringField(j, "prepend", type));
  } else if (type == "Replace") {
    step->kind = Step::Kind::kReplace;
    ENGRAM_ASSIGN_OR_RETURN(step->content, StringField(j, "content", type));
    auto pat = j.find("pattern");
    if (pat == j.end() || !pat->is_object()) {
      return InvalidArgument("normalizer Replace: expected an object \"pattern\"");
    }
    if (pat->contains("Regex") && (*pat)["Regex"].is_string()) {
      ENGRAM_ASSIGN_OR_RETURN(PcreRegex re, PcreRegex::Compile((*pat)["Regex"].get<std::string>()));
      step->pattern = std::make_unique<PcreRegex>(std::move(re));
    } else if (pat->contains("String") && (*pat)["String"].is_string()) {
      ENGRAM_ASSIGN_OR_RETURN(PcreRegex re,
                              PcreRegex::Literal((*pat)["String"].get<std::string>()));
      step->pattern = std::make_unique<PcreRegex>(std::move(re));
    } else {
      return InvalidArgument("normalizer Replace: pattern needs a string \"Regex\" or \"String\"");
    }
  } else {
    return Unimplemented(
        "normalizer type \"{}\" is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, "
        "Lowercase, StripAccents, Strip, Replace, Prepend)",
        type);
  }
  out->push_back(std::move(step));
  return Status::Ok();
}

Result<TextNormalizer> TextNormalizer::FromJson(const nlohmann::json& j) {
  TextNormalizer n;
  ENGRAM_RETURN_IF_ERROR(AddSteps(j, &n.steps_));
  return n;
}

Result<std::string> TextNormalizer::Apply(std::string_view text) const {
  std::string s(text);
  std::vector<std::pair<size_t, size_t>> matches;
  for (const auto& step : steps_) {
    switch (step->kind) {
      case Step::Kind::kNormalForm: {
        ENGRAM_ASSIGN_OR_RETURN(s, unicode::Normalize(s, step->form));
        break;
      }
      case Step::Kind::kLowercase:
        s = unicode::Lowercase(s);
        break;
      case Step::Kind::kStripAccents:
        s = unicode::StripMarks(s);
        break;
      case Step::Kind::kStrip:
        s = std::string(unicode::StripWhitespace(s, step->left, step->right));
        break;
      case Step::Kind::kPrepend:
        if (!s.empty()) s = step->content + s;
        break;
      case Step::Kind::kReplace: {
        matches.clear();
        ENGRAM_RETURN_IF_ERROR(step->pattern->FindAll(s, &matches));
        if (matches.empty()) break;
        std::string r;
        r.reserve(s.size());
        size_t prev = 0;
        for (const auto& [b, e] : matches) {
          r.append(s, prev, b - prev);
          r += step->content;
          prev = e;
        }
        r.append(s, prev, std::string::npos);
        s = std::move(r);
        break;
      }
    }
  }
  return s;
}

}  // namespace engram
