#include "text/pcre_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdio>

#include "text/utf8.h"

namespace engram {
namespace {

// Oniguruma's \s for Unicode: 0009-000D, 0085, Zl, Zp, Zs.
constexpr std::string_view kSpaceItems =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";
// Oniguruma's \w for Unicode: Letter, Mark, Number, Connector_Punctuation.
constexpr std::string_view kWordItems = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
constexpr std::string_view kHexItems = "0-9a-fA-F";

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Per-thread PCRE2 match state: match data with room for one pair (enough for the overall
// match of any pattern) and a JIT stack large enough for long runs of one class.
struct ThreadMatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;

  ThreadMatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr && jit_stack != nullptr) {
      pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
  }
  ~ThreadMatchState() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& MatchState() {
  thread_local ThreadMatchState state;
  return state;
}

std::string PcreError(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return fmt::format("error {}", code);
  return std::string(reinterpret_cast<const char*>(buf));
}

}  // namespace

struct PcreRegex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

Result<std::string> TranslateOnigPattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  size_t class_body = 0;  // offset in p where the current class's items start
  for (size_t i = 0; i < p.size();) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char d = p[i + 1];
      std::string_view items;
      bool negated = false;
      switch (d) {
        case 's':
        case 'S':
          items = kSpaceItems;
          negated = d == 'S';
          break;
        case 'w':
        case 'W':
          items = kWordItems;
          negated = d == 'W';
          break;
        case 'h':
        case 'H':
          items = kHexItems;
          negated = d == 'H';
          break;
        case 'd':
          out += "\\p{Nd}";
          i += 2;
          continue;
        case 'D':
          out += "\\P{Nd}";
          i += 2;
          continue;
        case 'u':
          if (i + 6 <= p.size() && IsHex(p[i + 2]) && IsHex(p[i + 3]) && IsHex(p[i + 4]) &&
              IsHex(p[i + 5])) {
            out += "\\x{";
            out.append(p.substr(i + 2, 4));
            out += "}";
            i += 6;
            continue;
          }
          break;
        default:
          break;
      }
      if (!items.empty()) {
        if (!in_class) {
          out += negated ? "[^" : "[";
          out.append(items);
          out += "]";
        } else if (!negated) {
          out.append(items);
        } else {
          return Unimplemented("regex /{}/: \\{} inside a character class is not supported", p, d);
        }
        i += 2;
        continue;
      }
      out.push_back(c);
      out.push_back(d);
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
        const size_t close = p.find(":]", i + 2);
        if (close == std::string_view::npos) {
          return InvalidArgument("regex /{}/: unterminated POSIX class", p);
        }
        out.append(p.substr(i, close + 2 - i));
        i = close + 2;
        continue;
      }
      if (c == '[') {
        return Unimplemented("regex /{}/: nested character classes are not supported", p);
      }
      if (c == ']' && i > class_body) in_class = false;
      out.push_back(c);
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out.push_back(c);
      ++i;
      if (i < p.size() && p[i] == '^') out.push_back(p[i++]);
      class_body = i;  // a ']' right here is a literal
      continue;
    }
    if (c == '(' && i + 2 < p.size() && p[i + 1] == '?') {
      // Inline flags (?imx-imx) / (?imx-imx:...): Ruby's m is PCRE2's s.
      size_t j = i + 2;
      while (j < p.size() && (p[j] == 'i' || p[j] == 'm' || p[j] == 'x' || p[j] == '-')) ++j;
      if (j > i + 2 && j < p.size() && (p[j] == ')' || p[j] == ':')) {
        out += "(?";
        for (size_t k = i + 2; k < j; ++k) out.push_back(p[k] == 'm' ? 's' : p[k]);
        i = j;
        continue;
      }
    }
    out.push_back(c);
    ++i;
  }
  if (in_class) return InvalidArgument("regex /{}/: unterminated character class", p);
  return out;
}

Result<PcreRegex> PcreRegex::Compile(std::string_view onig_pattern) {
  ENGRAM_ASSIGN_OR_RETURN(std::string translated, TranslateOnigPattern(onig_pattern));
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &err, &err_offset, nullptr);
  if (code == nullptr) {
    return InvalidArgument("regex /{}/ does not compile: {} at offset {}", onig_pattern,
                           PcreError(err), err_offset);
  }
  auto holder = std::make_shared<Code>();
  holder->code = code;
  holder->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  PcreRegex r;
  r.code_ = std::move(holder);
  r.pattern_ = std::string(onig_pattern);
  return r;
}

Result<PcreRegex> PcreRegex::Literal(std::string_view literal) {
  std::string quoted = "\\Q";
  // \Q...\E cannot hold "\E": split it.
  for (size_t i = 0; i < literal.size(); ++i) {
    if (literal[i] == '\\' && i + 1 < literal.size() && literal[i + 1] == 'E') {
      quoted += "\\E\\\\\\QE";
      ++i;
    } else {
      quoted.push_back(literal[i]);
    }
  }
  quoted += "\\E";
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(quoted.data()), quoted.size(),
                                   PCRE2_UTF, &err, &err_offset, nullptr);
  if (code == nullptr) {
    return InvalidArgument("literal pattern \"{}\" does not compile: {}", literal, PcreError(err));
  }
  auto holder = std::make_shared<Code>();
  holder->code = code;
  holder->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  PcreRegex r;
  r.code_ = std::move(holder);
  r.pattern_ = std::string(literal);
  return r;
}

Status PcreRegex::FindAll(std::string_view subject,
                          std::vector<std::pair<size_t, size_t>>* out) const {
  ThreadMatchState& st = MatchState();
  if (st.data == nullptr) return Internal("PCRE2: cannot allocate match data");
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  const size_t n = subject.size();
  size_t pos = 0;
  while (pos <= n) {
    int rc;
    if (code_->jit) {
      rc = pcre2_jit_match(code_->code, s, n, pos, PCRE2_NO_UTF_CHECK, st.data, st.context);
      if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
        // E.g. the JIT stack limit on a pathological input: retry with the interpreter.
        rc = pcre2_match(code_->code, s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st.data,
                         nullptr);
      }
    } else {
      rc = pcre2_match(code_->code, s, n, pos, PCRE2_NO_UTF_CHECK, st.data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return Internal("regex /{}/ failed at byte {}: {}", pattern_, pos, PcreError(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    const size_t begin = ov[0], end = ov[1];
    if (end > begin) {
      out->emplace_back(begin, end);
      pos = end;
    } else {
      // Empty match: not reported; move one code point on.
      if (begin >= n) break;
      size_t p = begin;
      utf8::Next(subject, &p);
      pos = p;
    }
  }
  return Status::Ok();
}

}  // namespace engram
