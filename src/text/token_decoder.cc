#include "text/token_decoder.h"

#include <nlohmann/json.hpp>

#include "text/byte_level.h"
#include "text/pcre_regex.h"
#include "text/utf8.h"

namespace engram {

struct TokenDecoder::Step {
  enum class Kind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  Kind kind = Kind::kFuse;
  // A Fuse or ByteLevel came before: the tokens this step sees are pieces of one text.
  bool merged = false;
  // Replace: the pattern (literal set for a String pattern) and its replacement.
  std::unique_ptr<PcreRegex> regex;
  std::string literal;
  bool is_literal = false;
  std::string content;
  // Strip: the character (UTF-8) and how many may go at the start and at the end.
  std::string strip;
  size_t start = 0, stop = 0;
  // Metaspace: the replacement character; whether the first token loses it (scheme != never).
  std::string replacement;
  bool strip_first = true;
};

namespace {

using Json = nlohmann::json;
using Step = TokenDecoder::Step;

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

Result<std::string> OneChar(const Json& j, const char* key, std::string_view type) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return InvalidArgument("decoder {}: expected a one-character string \"{}\"", type, key);
  }
  std::string s = it->get<std::string>();
  size_t pos = 0;
  if (s.empty() || !utf8::IsValid(s) || (utf8::Next(s, &pos), pos != s.size())) {
    return InvalidArgument("decoder {}: \"{}\" must be exactly one character, got \"{}\"", type,
                           key, s);
  }
  return s;
}

Result<size_t> Count(const Json& j, const char* key, std::string_view type) {
  auto it = j.find(key);
  if (it == j.end()) return size_t{0};
  if (!it->is_number_unsigned() || it->get<uint64_t>() > (1u << 20)) {
    return InvalidArgument("decoder {}: \"{}\" must be a count in [0, 2^20]", type, key);
  }
  return static_cast<size_t>(it->get<uint64_t>());
}

// The byte of a ByteFallback token "<0xNN>" (as HF: 6 bytes, u8::from_str_radix of the two
// in the middle, which takes either case and a leading '+'), or -1.
int ByteOf(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int lo = hex(t[4]);
  if (lo < 0) return -1;
  if (t[3] == '+') return lo;
  const int hi = hex(t[3]);
  return hi < 0 ? -1 : hi * 16 + lo;
}

// HF's ByteFallback for a finished run: its text when valid UTF-8, else U+FFFD per byte.
void FlushRun(std::string* run, std::vector<std::string>* out) {
  if (run->empty()) return;
  if (utf8::IsValid(*run)) {
    out->push_back(std::move(*run));
  } else {
    for (size_t i = 0; i < run->size(); ++i) out->emplace_back(kReplacementChar);
  }
  run->clear();
}

std::string ReplaceAll(const Step& s, std::string_view token) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (!s.regex->FindAll(token, &matches).ok() || matches.empty()) return std::string(token);
  std::string r;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    r.append(token.substr(prev, b - prev));
    r += s.content;
    prev = e;
  }
  r.append(token.substr(prev));
  return r;
}

// HF's Strip decoder on one token (where HF would panic, on a token shorter than what it
// strips, this gives what is left: nothing).
std::string StripToken(const Step& s, std::string_view t) {
  const size_t n = s.strip.size();
  size_t begin = 0;
  for (size_t k = 0; k < s.start && t.compare(begin, n, s.strip) == 0; ++k) begin += n;
  size_t end = t.size();
  for (size_t k = 0; k < s.stop && end >= n && t.compare(end - n, n, s.strip) == 0; ++k) end -= n;
  return begin < end ? std::string(t.substr(begin, end - begin)) : std::string();
}

// HF's Metaspace decoder: the replacement character becomes ' ', except in the first token
// (unless prepend_scheme is never), where it goes.
std::string MetaspaceToken(const Step& s, std::string_view t, bool first) {
  std::string r;
  r.reserve(t.size());
  const bool drop = first && s.strip_first;
  for (size_t pos = 0; pos < t.size();) {
    if (t.compare(pos, s.replacement.size(), s.replacement) == 0) {
      if (!drop) r += ' ';
      pos += s.replacement.size();
    } else {
      r += t[pos++];
    }
  }
  return r;
}

// HF's ByteLevel decoder on one token: the bytes its characters stand for, or its own
// UTF-8 when a character is not one of the 256.
void ByteLevelBytes(std::string_view t, std::string* out) {
  const size_t before = out->size();
  if (!ByteLevelMap::Get().Decode(t, out)) {
    out->resize(before);
    out->append(t);
  }
}

}  // namespace

Status TokenDecoder::AddSteps(const Json& j, std::vector<std::shared_ptr<const Step>>* out) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return InvalidArgument("decoder: expected an object with a string \"type\", got {}", j.dump());
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end() || !it->is_array()) {
      return InvalidArgument("decoder Sequence: expected an array \"decoders\"");
    }
    for (const auto& sub : *it) ENGRAM_RETURN_IF_ERROR(AddSteps(sub, out));
    return Status::Ok();
  }
  auto step = std::make_shared<Step>();
  if (type == "ByteLevel") {
    step->kind = Step::Kind::kByteLevel;
  } else if (type == "ByteFallback") {
    step->kind = Step::Kind::kByteFallback;
  } else if (type == "Fuse") {
    step->kind = Step::Kind::kFuse;
  } else if (type == "Replace") {
    step->kind = Step::Kind::kReplace;
    auto c = j.find("content");
    if (c == j.end() || !c->is_string()) {
      return InvalidArgument("decoder Replace: expected a string \"content\"");
    }
    step->content = c->get<std::string>();
    auto pat = j.find("pattern");
    if (pat != j.end() && pat->is_object() && pat->contains("Regex") &&
        (*pat)["Regex"].is_string()) {
      ENGRAM_ASSIGN_OR_RETURN(PcreRegex re, PcreRegex::Compile((*pat)["Regex"].get<std::string>()));
      step->regex = std::make_unique<PcreRegex>(std::move(re));
    } else if (pat != j.end() && pat->is_object() && pat->contains("String") &&
               (*pat)["String"].is_string()) {
      step->literal = (*pat)["String"].get<std::string>();
      step->is_literal = !step->literal.empty();
      ENGRAM_ASSIGN_OR_RETURN(PcreRegex re, PcreRegex::Literal(step->literal));
      step->regex = std::make_unique<PcreRegex>(std::move(re));
    } else {
      return InvalidArgument(
          "decoder Replace: expected \"pattern\": {{\"String\": ...}} or {{\"Regex\": ...}}");
    }
  } else if (type == "Strip") {
    step->kind = Step::Kind::kStrip;
    ENGRAM_ASSIGN_OR_RETURN(step->strip, OneChar(j, "content", type));
    ENGRAM_ASSIGN_OR_RETURN(step->start, Count(j, "start", type));
    ENGRAM_ASSIGN_OR_RETURN(step->stop, Count(j, "stop", type));
  } else if (type == "Metaspace") {
    step->kind = Step::Kind::kMetaspace;
    ENGRAM_ASSIGN_OR_RETURN(step->replacement, OneChar(j, "replacement", type));
    std::string scheme = "always";
    if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
      if (!it->is_string()) {
        return InvalidArgument("decoder Metaspace: \"prepend_scheme\" must be a string");
      }
      scheme = it->get<std::string>();
      if (scheme != "always" && scheme != "first" && scheme != "never") {
        return InvalidArgument(
            "decoder Metaspace: prepend_scheme \"{}\" (expected always, first or never)", scheme);
      }
    }
    if (auto it = j.find("add_prefix_space");
        it != j.end() && it->is_boolean() && !it->get<bool>()) {
      if (j.contains("prepend_scheme") && scheme != "never") {
        return InvalidArgument(
            "decoder Metaspace: add_prefix_space false does not match prepend_scheme \"{}\"",
            scheme);
      }
      scheme = "never";
    }
    step->strip_first = scheme != "never";
  } else {
    return Unimplemented(
        "decoder type \"{}\" is not supported (supported: ByteLevel, Replace, ByteFallback, "
        "Fuse, Strip, Metaspace, Sequence)",
        type);
  }
  out->push_back(std::move(step));
  return Status::Ok();
}

Result<TokenDecoder> TokenDecoder::FromJson(const Json& j) {
  TokenDecoder d;
  if (j.is_null()) return d;
  std::vector<std::shared_ptr<const Step>> steps;
  ENGRAM_RETURN_IF_ERROR(AddSteps(j, &steps));
  bool merged = false;
  for (auto& s : steps) {
    auto copy = std::const_pointer_cast<Step>(s);
    copy->merged = merged;
    if (s->kind == Step::Kind::kByteLevel || s->kind == Step::Kind::kFuse) merged = true;
  }
  d.steps_ = std::move(steps);
  if (d.steps_.empty()) {
    d.kind_ = Kind::kChain;  // an empty Sequence: the token strings joined
  } else if (d.steps_.size() == 1 && d.steps_[0]->kind == Step::Kind::kByteLevel) {
    d.kind_ = Kind::kByteLevel;
  } else {
    d.kind_ = Kind::kChain;
  }
  return d;
}

std::string TokenDecoder::Decode(const std::vector<std::string_view>& tokens) const {
  std::vector<std::string> toks(tokens.begin(), tokens.end());
  std::vector<std::string> next;
  for (const auto& sp : steps_) {
    const Step& s = *sp;
    switch (s.kind) {
      case Step::Kind::kByteLevel: {
        std::string bytes;
        for (const std::string& t : toks) ByteLevelBytes(t, &bytes);
        toks.assign(1, utf8::Lossy(bytes));
        break;
      }
      case Step::Kind::kReplace:
        for (std::string& t : toks) t = ReplaceAll(s, t);
        break;
      case Step::Kind::kByteFallback: {
        next.clear();
        std::string run;
        for (std::string& t : toks) {
          if (const int b = ByteOf(t); b >= 0) {
            run.push_back(static_cast<char>(b));
            continue;
          }
          FlushRun(&run, &next);
          next.push_back(std::move(t));
        }
        FlushRun(&run, &next);
        toks.swap(next);
        break;
      }
      case Step::Kind::kFuse: {
        std::string all;
        for (const std::string& t : toks) all += t;
        toks.assign(1, std::move(all));
        break;
      }
      case Step::Kind::kStrip:
        for (std::string& t : toks) t = StripToken(s, t);
        break;
      case Step::Kind::kMetaspace:
        for (size_t i = 0; i < toks.size(); ++i) toks[i] = MetaspaceToken(s, toks[i], i == 0);
        break;
    }
  }
  std::string out;
  for (const std::string& t : toks) out += t;
  return out;
}

// ---- streaming -----------------------------------------------------------------------------

TokenDecoder::Stream::Stream(const TokenDecoder* decoder) : decoder_(decoder) { Finish(); }

std::string TokenDecoder::Stream::Push(std::string_view token) {
  std::string out;
  for (const std::string& t : Run({std::string(token)}, false)) out += t;
  return out;
}

std::string TokenDecoder::Stream::Finish() {
  std::string out;
  if (decoder_ == nullptr) return out;
  if (!states_.empty()) {
    for (const std::string& t : Run({}, true)) out += t;
  }
  states_.assign(decoder_->steps_.size(), State());
  for (size_t i = 0; i < states_.size(); ++i) states_[i].start_left = decoder_->steps_[i]->start;
  return out;
}

size_t TokenDecoder::Stream::pending_bytes() const {
  size_t n = 0;
  for (const State& s : states_) n += s.held.size();
  return n;
}

std::vector<std::string> TokenDecoder::Stream::Run(std::vector<std::string> batch, bool finish) {
  std::vector<std::string> out;
  for (size_t i = 0; i < decoder_->steps_.size(); ++i) {
    const Step& s = *decoder_->steps_[i];
    State& st = states_[i];
    out.clear();
    for (std::string& t : batch) {
      switch (s.kind) {
        case Step::Kind::kByteLevel: {
          // The fused bytes, as far as they are complete UTF-8 (HF decodes them lossily).
          ByteLevelBytes(t, &st.held);
          const size_t n = utf8::CompletePrefix(st.held);
          if (n > 0) {
            out.push_back(utf8::Lossy(std::string_view(st.held).substr(0, n)));
            st.held.erase(0, n);
          }
          break;
        }
        case Step::Kind::kReplace: {
          if (!s.merged || !s.is_literal) {
            out.push_back(ReplaceAll(s, t));
            break;
          }
          // In fused text a match may span tokens: hold what could begin one.
          std::string text = std::move(st.held) + t;
          st.held.clear();
          std::vector<std::pair<size_t, size_t>> matches;
          size_t settled_from = 0;
          if (s.regex->FindAll(text, &matches).ok() && !matches.empty()) {
            settled_from = matches.back().second;
          }
          size_t hold = std::min(s.literal.size() - 1, text.size() - settled_from);
          while (hold > 0 && text.compare(text.size() - hold, hold, s.literal, 0, hold) != 0) {
            --hold;
          }
          st.held = text.substr(text.size() - hold);
          text.resize(text.size() - hold);
          out.push_back(ReplaceAll(s, text));
          break;
        }
        case Step::Kind::kByteFallback: {
          if (s.merged) {
            out.push_back(std::move(t));
            break;
          }
          if (const int b = ByteOf(t); b >= 0) {
            st.held.push_back(static_cast<char>(b));
            break;
          }
          FlushRun(&st.held, &out);
          out.push_back(std::move(t));
          break;
        }
        case Step::Kind::kFuse:
          out.push_back(std::move(t));
          break;
        case Step::Kind::kStrip: {
          if (!s.merged) {
            out.push_back(StripToken(s, t));
            break;
          }
          // The start and end of the fused text: strip the first characters once; hold the
          // last ones that the end could strip.
          const size_t n = s.strip.size();
          if (st.at_start) {
            size_t begin = 0;
            while (st.start_left > 0 && t.compare(begin, n, s.strip) == 0) {
              begin += n;
              --st.start_left;
            }
            t.erase(0, begin);
            if (!t.empty() || st.start_left == 0) st.at_start = false;
          }
          if (s.stop == 0) {
            out.push_back(std::move(t));
            break;
          }
          std::string text = std::move(st.held) + t;
          st.held.clear();
          size_t end = text.size();
          for (size_t k = 0; k < s.stop && end >= n && text.compare(end - n, n, s.strip) == 0;
               ++k) {
            end -= n;
          }
          st.held = text.substr(end);
          text.resize(end);
          out.push_back(std::move(text));
          break;
        }
        case Step::Kind::kMetaspace:
          out.push_back(MetaspaceToken(s, t, s.merged || st.index == 0));
          ++st.index;
          break;
      }
    }
    if (finish) {
      switch (s.kind) {
        case Step::Kind::kByteLevel:
          if (!st.held.empty()) out.push_back(utf8::Lossy(st.held));
          break;
        case Step::Kind::kReplace:
          if (!st.held.empty()) out.push_back(std::move(st.held));
          break;
        case Step::Kind::kByteFallback:
          FlushRun(&st.held, &out);
          break;
        case Step::Kind::kStrip:  // what the end strips goes
        case Step::Kind::kFuse:
        case Step::Kind::kMetaspace:
          break;
      }
      st.held.clear();
    }
    batch.swap(out);
  }
  return batch;
}

}  // namespace engram
