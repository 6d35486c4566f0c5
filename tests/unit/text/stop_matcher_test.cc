#include "text/stop_matcher.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace engram {
namespace {

StopMatcher Make(std::vector<std::string> stops) {
  auto m = StopMatcher::Create(std::move(stops));
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::move(m).value();
}

// Feeds the deltas; returns everything emitted (plus Flush when no stop matched).
std::string Feed(StopMatcher& m, const std::vector<std::string>& deltas) {
  std::string out;
  for (const std::string& d : deltas) {
    const StopMatcher::Delta r = m.Push(d);
    out += r.text;
    if (r.stopped) return out;
  }
  return out + m.Flush();
}

TEST(StopMatcher, HoldsAPossibleStopStartAndDropsFromTheMatch) {
  StopMatcher m = Make({"\n\n", "END"});
  StopMatcher::Delta a = m.Push("hello E");
  EXPECT_EQ(a.text, "hello ");
  EXPECT_FALSE(a.stopped);
  EXPECT_EQ(m.held_bytes(), 1u);
  StopMatcher::Delta b = m.Push("ND more");
  EXPECT_EQ(b.text, "");
  EXPECT_TRUE(b.stopped);
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched_stop(), 1);
  // Stopped: later text is ignored.
  StopMatcher::Delta c = m.Push("x");
  EXPECT_EQ(c.text, "");
  EXPECT_TRUE(c.stopped);
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, ReleasesTextBeforeAStopInTheSameDelta) {
  StopMatcher m = Make({"\n\n", "END"});
  StopMatcher::Delta r = m.Push("abc\n\nxyz END");
  EXPECT_EQ(r.text, "abc");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(m.matched_stop(), 0);
}

TEST(StopMatcher, ReleasesHeldTextOnceDisambiguated) {
  StopMatcher m = Make({"END"});
  EXPECT_EQ(m.Push("the EN").text, "the ");
  StopMatcher::Delta r = m.Push("D");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");

  StopMatcher n = Make({"END"});
  EXPECT_EQ(n.Push("the EN").text, "the ");
  EXPECT_EQ(n.Push("TRY E").text, "ENTRY ");
  EXPECT_EQ(n.held_bytes(), 1u);
  EXPECT_EQ(n.Flush(), "E");  // finish without a match releases what was held
  EXPECT_FALSE(n.stopped());
}

TEST(StopMatcher, StopSpanningThreeDeltas) {
  StopMatcher m = Make({"<|end|>"});
  EXPECT_EQ(m.Push("x<|").text, "x");
  EXPECT_EQ(m.Push("en").text, "");
  EXPECT_EQ(m.held_bytes(), 4u);
  StopMatcher::Delta r = m.Push("d|>tail");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");

  StopMatcher n = Make({"<|end|>"});
  EXPECT_EQ(Feed(n, {"a<|", "en", "x|>b"}), "a<|enx|>b");
}

TEST(StopMatcher, MultiByteUtf8Stops) {
  StopMatcher m = Make({"終わり", "😀"});
  EXPECT_EQ(m.Push("これで終").text, "これで");
  StopMatcher::Delta r = m.Push("わりです");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");
  EXPECT_EQ(m.matched_stop(), 0);

  StopMatcher n = Make({"終わり", "😀"});
  EXPECT_EQ(n.Push("終").text, "");
  EXPECT_EQ(n.Push("了 😁").text, "終了 😁");  // shares 3 lead bytes with 😀, yet released
  StopMatcher::Delta e = n.Push("ok😀!");
  EXPECT_EQ(e.text, "ok");
  EXPECT_TRUE(e.stopped);
  EXPECT_EQ(n.matched_stop(), 1);
}

TEST(StopMatcher, OverlappingPrefixes) {
  StopMatcher m = Make({"aab"});
  EXPECT_EQ(m.Push("a").text, "");
  EXPECT_EQ(m.Push("a").text, "");
  EXPECT_EQ(m.Push("a").text, "a");  // "aaa": only the last "aa" can still start "aab"
  StopMatcher::Delta r = m.Push("b");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "");

  StopMatcher n = Make({"aab"});
  StopMatcher::Delta all = n.Push("aaab");
  EXPECT_TRUE(all.stopped);
  EXPECT_EQ(all.text, "a");
}

TEST(StopMatcher, NoStopsPassEverythingThrough) {
  StopMatcher m = Make({});
  StopMatcher::Delta r = m.Push("hello wor");
  EXPECT_EQ(r.text, "hello wor");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(m.held_bytes(), 0u);
  EXPECT_EQ(m.Push("").text, "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, FirstStopToCompleteWinsWhateverTheSplit) {
  // "bc" completes before "abcd": the result must not depend on the deltas.
  for (const std::vector<std::string>& deltas :
       {std::vector<std::string>{"abcd"}, {"ab", "cd"}, {"a", "b", "c", "d"}}) {
    StopMatcher m = Make({"abcd", "bc"});
    EXPECT_EQ(Feed(m, deltas), "a");
    EXPECT_EQ(m.matched_stop(), 1);
  }
  // Equal ends: the longer stop (earlier start) wins.
  StopMatcher m = Make({"c", "abc"});
  EXPECT_EQ(Feed(m, {"xabc"}), "x");
  EXPECT_EQ(m.matched_stop(), 1);
}

TEST(StopMatcher, FlushResetsForANewStream) {
  StopMatcher m = Make({"END"});
  EXPECT_TRUE(m.Push("xEND").stopped);
  EXPECT_EQ(m.Flush(), "");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.matched_stop(), -1);
  EXPECT_EQ(Feed(m, {"E", "N", "d"}), "ENd");
}

// Reference: the text up to the stop that completes first (at equal ends, the longest).
std::string Reference(const std::string& text, const std::vector<std::string>& stops) {
  for (size_t end = 1; end <= text.size(); ++end) {
    size_t best = 0;
    for (const std::string& s : stops) {
      if (s.size() <= end && text.compare(end - s.size(), s.size(), s) == 0) {
        best = std::max(best, s.size());
      }
    }
    if (best > 0) return text.substr(0, end - best);
  }
  return text;
}

TEST(StopMatcher, MatchesABruteForceReferenceOnRandomSplits) {
  std::mt19937 gen(2024);
  auto rand_string = [&](size_t max_len) {
    std::string s(1 + gen() % max_len, 'a');
    for (char& c : s) c = static_cast<char>('a' + gen() % 3);
    return s;
  };
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> stops;
    const size_t n_stops = gen() % 4;
    for (size_t i = 0; i < n_stops; ++i) stops.push_back(rand_string(5));
    const std::string text = rand_string(40);
    std::vector<std::string> deltas;
    for (size_t pos = 0; pos < text.size();) {
      const size_t len = std::min<size_t>(text.size() - pos, gen() % 5);
      deltas.push_back(text.substr(pos, len));
      pos += len;
    }
    StopMatcher m = Make(stops);
    std::string emitted;
    bool stopped = false;
    for (const std::string& d : deltas) {
      const StopMatcher::Delta r = m.Push(d);
      emitted += r.text;
      // Held text is never more than a stop's length minus one.
      EXPECT_LT(m.held_bytes(), 5u);
      if (r.stopped) {
        stopped = true;
        break;
      }
    }
    if (!stopped) emitted += m.Flush();
    const std::string want = Reference(text, stops);
    EXPECT_EQ(emitted, want) << "text " << text << " trial " << trial;
    EXPECT_EQ(stopped, want.size() != text.size());
  }
}

TEST(StopMatcher, ValidateNamesTheOffendingStop) {
  EXPECT_TRUE(StopMatcher::Validate(std::vector<std::string>{}).ok());
  const std::vector<std::string> empty = {"ok", ""};
  Status st = StopMatcher::Validate(empty);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("stop[1]"), std::string::npos) << st.message();
  EXPECT_FALSE(StopMatcher::Create(empty).ok());

  const std::vector<std::string> too_many(StopMatcher::kMaxStops + 1, "x");
  st = StopMatcher::Validate(too_many);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("16"), std::string::npos) << st.message();
  EXPECT_TRUE(StopMatcher::Validate(std::vector<std::string>(StopMatcher::kMaxStops, "x")).ok());

  const std::vector<std::string> too_long = {"a", "b", std::string(257, 'x')};
  st = StopMatcher::Validate(too_long);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("stop[2]"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("256"), std::string::npos) << st.message();
  EXPECT_TRUE(StopMatcher::Validate(std::vector<std::string>{std::string(256, 'x')}).ok());

  const std::vector<std::string> bad_utf8 = {"\xff"};
  st = StopMatcher::Validate(bad_utf8);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("stop[0]"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace engram
