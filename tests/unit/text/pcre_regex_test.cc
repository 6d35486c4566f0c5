#include "text/pcre_regex.h"

#include <gtest/gtest.h>

namespace engram {
namespace {

std::vector<std::string> Matches(const std::string& pattern, std::string_view subject) {
  auto re = PcreRegex::Compile(pattern);
  EXPECT_TRUE(re.ok()) << re.status().ToString();
  std::vector<std::pair<size_t, size_t>> m;
  std::vector<std::string> out;
  if (!re.ok()) return out;
  EXPECT_TRUE(re->FindAll(subject, &m).ok());
  for (auto [b, e] : m) out.emplace_back(subject.substr(b, e - b));
  return out;
}

TEST(PcreRegex, OnigurumaSpaceClass) {
  // U+180E is not White_Space for Oniguruma (PCRE2's own \s would take it).
  EXPECT_EQ(Matches("\\s+",
                    "a \xE1\xA0\x8E\xC2\x85"
                    "b"),
            (std::vector<std::string>{" ", "\xC2\x85"}));
  EXPECT_EQ(Matches("[\\s,]+", "a, b"), (std::vector<std::string>{", "}));
  EXPECT_EQ(Matches("\\S+", "ab cd"), (std::vector<std::string>{"ab", "cd"}));
  EXPECT_EQ(Matches("\\s+(?!\\S)|\\s+", "a   b  "), (std::vector<std::string>{"  ", " ", "  "}));
}

TEST(PcreRegex, UnicodeClassesAndLookahead) {
  EXPECT_EQ(Matches("\\p{N}{1,3}", "x12345٣"), (std::vector<std::string>{"123", "45٣"}));
  EXPECT_EQ(Matches("[\\p{L}\\p{M}]+", "e\xCC\x81t\xC3\xA9 x"),
            (std::vector<std::string>{"e\xCC\x81t\xC3\xA9", "x"}));
  EXPECT_EQ(Matches("(?i:'s|'t)", "IT'S it's"), (std::vector<std::string>{"'S", "'s"}));
  EXPECT_EQ(Matches("\\h+", "xx0aF9zz"), (std::vector<std::string>{"0aF9"}));  // hex digits
  EXPECT_EQ(Matches("\\u00e9", "caf\xC3\xA9"), (std::vector<std::string>{"\xC3\xA9"}));
  EXPECT_EQ(Matches("^ $", " "), (std::vector<std::string>{" "}));
  EXPECT_TRUE(Matches("^ $", "  ").empty());
}

TEST(PcreRegex, LiteralAndErrors) {
  auto lit = PcreRegex::Literal("a.b\\E*");
  ASSERT_TRUE(lit.ok());
  std::vector<std::pair<size_t, size_t>> m;
  ASSERT_TRUE(lit->FindAll("xa.b\\E*yazb", &m).ok());
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], (std::pair<size_t, size_t>{1, 7}));
  auto bad = PcreRegex::Compile("(unclosed");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("(unclosed"), std::string::npos);
}

TEST(PcreRegex, LongRunsDoNotFail) {
  const std::string spaces(200000, ' ');
  EXPECT_EQ(Matches("\\s+(?!\\S)|\\s+", spaces + "x").size(), 2u);
}

}  // namespace
}  // namespace engram
