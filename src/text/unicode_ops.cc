#include "text/unicode_ops.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include "text/utf8.h"

namespace engram::unicode {
namespace {

// Characters assigned in Unicode 9.0 or earlier ([:age=9.0:] is cumulative in ICU).
// A frozen set built once from `pattern`; null when ICU rejects it.
const icu::UnicodeSet* FrozenSet(const char16_t* pattern) {
  UErrorCode status = U_ZERO_ERROR;
  auto* s = new icu::UnicodeSet(icu::UnicodeString(pattern), status);
  if (U_FAILURE(status)) {
    delete s;
    return nullptr;
  }
  s->freeze();
  return s;
}

const icu::UnicodeSet* Unicode9Set() {
  static const icu::UnicodeSet* set = FrozenSet(u"[:age=9.0:]");
  return set;
}

// Combining marks known to Unicode 9.0.
const icu::UnicodeSet* Unicode9Marks() {
  static const icu::UnicodeSet* set = FrozenSet(u"[[:M:]&[:age=9.0:]]");
  return set;
}

// The four normal forms filtered to Unicode 9.0, built once (ICU normalizers are immutable
// and thread-safe). Null entries when ICU's data is unavailable.
struct FilteredForms {
  const icu::Normalizer2* forms[4] = {};
  std::string error;
};

const FilteredForms& Forms() {
  static const FilteredForms forms = [] {
    FilteredForms f;
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* base[4] = {
        icu::Normalizer2::getNFCInstance(status), icu::Normalizer2::getNFDInstance(status),
        icu::Normalizer2::getNFKCInstance(status), icu::Normalizer2::getNFKDInstance(status)};
    if (U_FAILURE(status) || Unicode9Set() == nullptr) {
      f.error = u_errorName(status);
      return f;
    }
    for (int i = 0; i < 4; ++i) f.forms[i] = new icu::FilteredNormalizer2(*base[i], *Unicode9Set());
    return f;
  }();
  return forms;
}

bool IsAscii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

}  // namespace

Result<std::string> Normalize(std::string_view text, NormalForm form) {
  // ASCII is invariant under every normalization form.
  if (IsAscii(text)) return std::string(text);
  const icu::Normalizer2* n = Forms().forms[static_cast<int>(form)];
  if (n == nullptr) return Internal("ICU normalizer unavailable: {}", Forms().error);
  UErrorCode status = U_ZERO_ERROR;
  const icu::UnicodeString src = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  const icu::UnicodeString dst = n->normalize(src, status);
  if (U_FAILURE(status)) return Internal("ICU normalization failed: {}", u_errorName(status));
  std::string out;
  dst.toUTF8String(out);
  return out;
}

std::string StripMarks(std::string_view text) {
  if (IsAscii(text)) return std::string(text);
  const icu::UnicodeSet* marks = Unicode9Marks();
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t cp = utf8::Next(text, &pos);
    if (marks != nullptr && marks->contains(static_cast<UChar32>(cp))) continue;
    out.append(text.substr(start, pos - start));
  }
  return out;
}

std::string Lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t cp = utf8::Next(text, &pos);
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
      continue;
    }
    // Full (possibly multi-code-point) mapping of this code point alone, root locale.
    UChar src[2];
    int32_t src_len = 0;
    U16_APPEND_UNSAFE(src, src_len, static_cast<UChar32>(cp));
    UChar dst[8];
    UErrorCode status = U_ZERO_ERROR;
    const int32_t n = u_strToLower(dst, 8, src, src_len, "", &status);
    if (U_FAILURE(status) || n > 8) {
      out.append(text.substr(start, pos - start));
      continue;
    }
    for (int32_t i = 0; i < n;) {
      UChar32 c;
      U16_NEXT(dst, i, n, c);
      utf8::Append(static_cast<char32_t>(c), &out);
    }
  }
  return out;
}

bool IsWhiteSpace(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)) != 0; }

bool IsWordChar(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_hasBinaryProperty(c, UCHAR_ALPHABETIC) || u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL)) {
    return true;
  }
  const int32_t mask = U_GET_GC_MASK(c);
  return (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

std::string_view StripWhitespace(std::string_view text, bool left, bool right) {
  size_t begin = 0, end = text.size();
  if (left) {
    while (begin < end) {
      size_t p = begin;
      if (!IsWhiteSpace(utf8::Next(text, &p))) break;
      begin = p;
    }
  }
  if (right) {
    while (end > begin) {
      size_t p = end;
      if (!IsWhiteSpace(utf8::Prev(text, &p))) break;
      end = p;
    }
  }
  return text.substr(begin, end - begin);
}

}  // namespace engram::unicode
