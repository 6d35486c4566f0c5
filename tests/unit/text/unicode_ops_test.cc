#include "text/unicode_ops.h"

#include <gtest/gtest.h>

namespace engram {
namespace {

// The expectations were checked against HF tokenizers' Rust normalizers (npm
// @anush008/tokenizers 0.6.0 = tokenizers 0.22.2).
TEST(UnicodeOps, LowercaseIsPerCodePointFullMapping) {
  EXPECT_EQ(unicode::Lowercase("İ"), "i\xCC\x87");  // U+0130 -> i + U+0307
  EXPECT_EQ(unicode::Lowercase("ΟΔΟΣ"), "οδοσ");    // no final-sigma context
  EXPECT_EQ(unicode::Lowercase("ÀB\xF0\x9E\xA4\x80"), "àb\xF0\x9E\xA4\xA2");  // U+1E900
}

TEST(UnicodeOps, NormalizationUsesUnicode9Tables) {
  auto nfkc = [](std::string_view s) { return *unicode::Normalize(s, unicode::NormalForm::kNfkc); };
  EXPECT_EQ(nfkc("\xF0\x9F\x85\xAA"), "MC");                // U+1F16A (Unicode 6.1)
  EXPECT_EQ(nfkc("\xF0\x9F\x85\xAC"), "\xF0\x9F\x85\xAC");  // U+1F16C (12.0): unknown, kept
  EXPECT_EQ(nfkc("\xEA\x9F\xB2"), "\xEA\x9F\xB2");          // U+A7F2 (14.0): kept
  EXPECT_EQ(nfkc("ﬁ①"), "fi1");
  EXPECT_EQ(*unicode::Normalize("é", unicode::NormalForm::kNfd), "e\xCC\x81");
}

TEST(UnicodeOps, StripMarksDropsMarksKnownToUnicode9) {
  EXPECT_EQ(unicode::StripMarks("a\xCC\x81"
                                "b"),
            "ab");  // Mn
  EXPECT_EQ(unicode::StripMarks("a\xE0\xA4\x83"
                                "b"),
            "ab");  // Mc U+0903
  EXPECT_EQ(unicode::StripMarks("a\xE2\x83\x9D"
                                "b"),
            "ab");  // Me U+20DD
  EXPECT_EQ(unicode::StripMarks("a\xE1\xB7\xB6"
                                "b"),
            "a\xE1\xB7\xB6"
            "b");  // U+1DF6 (10.0)
}

TEST(UnicodeOps, WhitespaceIsTheWhiteSpaceProperty) {
  EXPECT_EQ(unicode::StripWhitespace("\xC2\x85 x\xE3\x80\x80", true, true), "x");
  EXPECT_EQ(unicode::StripWhitespace("\xE1\xA0\x8Ex\xE2\x80\x8B", true, true),
            "\xE1\xA0\x8Ex\xE2\x80\x8B");  // U+180E and U+200B are not White_Space
  EXPECT_EQ(unicode::StripWhitespace("  x  ", false, true), "  x");
}

}  // namespace
}  // namespace engram
