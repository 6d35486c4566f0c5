#include "model/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace engram {
namespace {

// log_softmax in double, the reference for the sampler's logprobs.
std::vector<double> LogSoftmax(const std::vector<float>& x) {
  double mx = -INFINITY;
  for (float v : x) mx = std::max(mx, static_cast<double>(v));
  double sum = 0;
  for (float v : x) sum += std::exp(static_cast<double>(v) - mx);
  std::vector<double> out;
  for (float v : x) out.push_back(static_cast<double>(v) - mx - std::log(sum));
  return out;
}

// The logprobs of every token as the sampler reports them (top_n = vocab), by token id.
std::vector<float> ProcessedLogprobs(Sampler& s, const std::vector<float>& logits) {
  const SampleResult r = s.SampleWithLogprobs(logits, static_cast<int>(logits.size()));
  std::vector<float> out(logits.size(), NAN);
  for (const auto& [tok, lp] : r.top) out[static_cast<size_t>(tok)] = lp;
  return out;
}

// Expects the sampler's processed logprobs to be log_softmax(expected_logits).
void ExpectProcessed(Sampler& s, const std::vector<float>& logits,
                     const std::vector<float>& expected_logits) {
  const std::vector<float> got = ProcessedLogprobs(s, logits);
  const std::vector<double> want = LogSoftmax(expected_logits);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "token " << i;
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  SamplingParams p;
  p.repetition_penalty = 2.f;
  Sampler s(p);
  const std::vector<int32_t> prompt = {0, 1, 0};
  s.SetPrompt(prompt);
  s.Accept(2);  // output tokens count too
  const std::vector<float> logits = {2.f, -1.f, 0.5f, 3.f, 0.f};
  ExpectProcessed(s, logits, {1.f, -2.f, 0.25f, 3.f, 0.f});
}

TEST(Sampler, SetPromptReplacesThePreviousPrompt) {
  SamplingParams p;
  p.repetition_penalty = 2.f;
  Sampler s(p);
  const std::vector<int32_t> a = {0}, b = {1};
  s.SetPrompt(a);
  s.SetPrompt(b);
  ExpectProcessed(s, {2.f, 2.f, 2.f}, {2.f, 1.f, 2.f});
}

TEST(Sampler, PresencePenaltyAppliesOncePerOutputTokenNotToThePrompt) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  Sampler s(p);
  const std::vector<int32_t> prompt = {3};
  s.SetPrompt(prompt);
  s.Accept(1);
  s.Accept(1);
  s.Accept(2);
  ExpectProcessed(s, {1.f, 1.f, 1.f, 1.f}, {1.f, 0.5f, 0.5f, 1.f});
}

TEST(Sampler, FrequencyPenaltyScalesWithCount) {
  SamplingParams p;
  p.frequency_penalty = 0.25f;
  Sampler s(p);
  s.Accept(1);
  s.Accept(1);
  s.Accept(2);
  ExpectProcessed(s, {1.f, 1.f, 1.f, 1.f}, {1.f, 0.5f, 0.75f, 1.f});
  EXPECT_EQ(s.output_tokens(), 4);  // 3 accepted + the sampled one
}

TEST(Sampler, NegativePresenceAndFrequencyEncourageRepetition) {
  SamplingParams p;
  p.presence_penalty = -1.f;
  p.frequency_penalty = -0.5f;
  Sampler s(p);
  s.Accept(0);
  s.Accept(0);
  ExpectProcessed(s, {0.f, 0.f}, {2.f, 0.f});
}

TEST(Sampler, PenaltiesCombineRepetitionFirst) {
  SamplingParams p;
  p.repetition_penalty = 2.f;
  p.presence_penalty = 0.1f;
  p.frequency_penalty = 0.2f;
  Sampler s(p);
  const std::vector<int32_t> prompt = {3};
  s.SetPrompt(prompt);
  s.Accept(0);
  s.Accept(0);
  s.Accept(1);
  // 0: 2/2 - 0.1 - 0.4; 1: -1*2 - 0.1 - 0.2; 2: unseen; 3: prompt only, 4/2.
  ExpectProcessed(s, {2.f, -1.f, 1.f, 4.f}, {0.5f, -2.3f, 1.f, 2.f});
}

TEST(Sampler, GreedyAppliesPenaltiesThenArgmax) {
  SamplingParams p;
  p.frequency_penalty = 1.5f;
  Sampler s(p);
  const std::vector<float> logits = {5.f, 4.f, 3.f};
  std::vector<int32_t> got;
  for (int i = 0; i < 5; ++i) got.push_back(s.Sample(logits));
  // {5,4,3} -> 0; {3.5,4,3} -> 1; {3.5,2.5,3} -> 0; {2,2.5,3} -> 2; {2,2.5,1.5} -> 1.
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 0, 2, 1}));
  EXPECT_EQ(logits, (std::vector<float>{5.f, 4.f, 3.f}));  // the caller's row is untouched

  SamplingParams r;
  r.repetition_penalty = 1.2f;
  Sampler g(r);
  const std::vector<int32_t> prompt = {0};
  g.SetPrompt(prompt);
  EXPECT_EQ(g.Sample(std::vector<float>{3.f, 2.9f, 1.f}), 1);  // 3 / 1.2 = 2.5 < 2.9
  EXPECT_EQ(g.Sample(std::vector<float>{3.f, 2.9f, 1.f}), 0);  // 2.9 / 1.2 < 2.5
}

TEST(Sampler, SequencesSharingALogitsRowKeepTheirOwnPenalties) {
  SamplingParams p;
  p.presence_penalty = 2.f;
  Sampler a(p), b(p);
  const std::vector<float> row = {1.f, 0.f};
  a.Accept(0);
  EXPECT_EQ(a.Sample(row), 1);
  EXPECT_EQ(b.Sample(row), 0);
  EXPECT_EQ(row, (std::vector<float>{1.f, 0.f}));
}

TEST(Sampler, WithoutPenaltiesGreedyIsArgmax) {
  Sampler s(SamplingParams{});
  const std::vector<float> logits = {0.f, 7.f, 7.f, -1.f};
  EXPECT_EQ(s.Sample(logits), 1);  // lowest index among ties
  EXPECT_EQ(s.Sample(logits), 1);
  EXPECT_EQ(Argmax(logits), 1);
}

TEST(Sampler, LogprobsMatchADoublePrecisionLogSoftmax) {
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0.f, 8.f);
  std::vector<float> logits(5000);
  for (float& v : logits) v = 1000.f + nd(gen);  // large offset: needs the max shift
  logits[17] = -INFINITY;                        // a masked token
  const std::vector<double> ref = LogSoftmax(logits);

  SamplingParams p;
  p.temperature = 0.7f;  // logprobs are taken before temperature
  p.top_k = 50;
  p.seed = 3;
  Sampler s(p);
  for (int step = 0; step < 5; ++step) {
    const SampleResult r = s.SampleWithLogprobs(logits, 20);
    ASSERT_GE(r.token, 0);
    EXPECT_NEAR(r.logprob, ref[static_cast<size_t>(r.token)], 1e-4);
    ASSERT_EQ(r.top.size(), 20u);
    for (const auto& [tok, lp] : r.top) EXPECT_NEAR(lp, ref[static_cast<size_t>(tok)], 1e-4);
  }
  const std::vector<float> all = ProcessedLogprobs(s, logits);
  double mass = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (i == 17) {
      EXPECT_EQ(all[i], -INFINITY);
      continue;
    }
    EXPECT_NEAR(all[i], ref[i], 1e-4) << i;
    mass += std::exp(static_cast<double>(all[i]));
  }
  EXPECT_NEAR(mass, 1.0, 1e-4);
}

TEST(Sampler, TopLogprobsAreSortedDescendingWithTiesByLowerId) {
  Sampler s(SamplingParams{});
  const std::vector<float> logits = {1.f, 3.f, 3.f, 2.f, 0.f, 3.f};
  const SampleResult r = s.SampleWithLogprobs(logits, 4);
  EXPECT_EQ(r.token, 1);
  ASSERT_EQ(r.top.size(), 4u);
  EXPECT_EQ(r.top[0].first, 1);
  EXPECT_EQ(r.top[1].first, 2);
  EXPECT_EQ(r.top[2].first, 5);
  EXPECT_EQ(r.top[3].first, 3);
  for (size_t i = 1; i < r.top.size(); ++i) EXPECT_GE(r.top[i - 1].second, r.top[i].second);
  EXPECT_FLOAT_EQ(r.logprob, r.top[0].second);

  EXPECT_TRUE(s.SampleWithLogprobs(logits, 0).top.empty());
  EXPECT_EQ(s.SampleWithLogprobs(logits, 100).top.size(), logits.size());  // clamped

  // Ascending logits: every element displaces the smallest kept one.
  std::vector<float> asc(300);
  for (size_t i = 0; i < asc.size(); ++i) asc[i] = static_cast<float>(i) * 0.01f;
  const SampleResult a = s.SampleWithLogprobs(asc, 5);
  ASSERT_EQ(a.top.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(a.top[static_cast<size_t>(i)].first, 299 - i);
}

std::vector<int32_t> Draws(const SamplingParams& p, int n) {
  Sampler s(p);
  std::vector<int32_t> out;
  std::vector<float> logits(64);
  for (int i = 0; i < n; ++i) {
    for (size_t j = 0; j < logits.size(); ++j) {
      logits[j] = std::sin(static_cast<float>(i * 7 + static_cast<int>(j)));
    }
    out.push_back(s.Sample(logits));
  }
  return out;
}

TEST(Sampler, SeededSamplingIsReproducibleAndSeedsDiffer) {
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 42;
  p.repetition_penalty = 1.1f;
  p.frequency_penalty = 0.3f;
  const std::vector<int32_t> a = Draws(p, 100);
  EXPECT_EQ(a, Draws(p, 100));
  p.seed = 43;
  const std::vector<int32_t> b = Draws(p, 100);
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
  EXPECT_GT(differ, 50);

  p.top_p = 0.9f;  // the filtered paths are seeded too
  p.top_k = 20;
  p.min_p = 0.05f;
  EXPECT_EQ(Draws(p, 100), Draws(p, 100));
}

// Counts of each token over n draws from fixed logits.
std::vector<int> Histogram(const SamplingParams& p, const std::vector<float>& logits, int n) {
  Sampler s(p);
  std::vector<int> count(logits.size());
  for (int i = 0; i < n; ++i) ++count[static_cast<size_t>(s.Sample(logits))];
  return count;
}

TEST(Sampler, TopKTwoDrawsOnlyTheTwoBestInSoftmaxProportion) {
  const std::vector<float> logits = {0.f, 2.f, 1.f, -1.f, 1.5f};
  constexpr int kN = 20000;
  for (float t : {1.f, 2.f}) {
    SamplingParams p;
    p.temperature = t;
    p.top_k = 2;
    p.seed = 1234;  // fixed: the test is deterministic
    const std::vector<int> c = Histogram(p, logits, kN);
    EXPECT_EQ(c[0] + c[2] + c[3], 0);
    EXPECT_EQ(c[1] + c[4], kN);
    const double want = 1.0 / (1.0 + std::exp(-0.5 / t));  // P(1) within {1, 4}
    // sd = sqrt(p(1-p)/N) < 0.0036: 0.02 is more than 5 sd.
    EXPECT_NEAR(static_cast<double>(c[1]) / kN, want, 0.02) << "temperature " << t;
  }
}

TEST(Sampler, FullSoftmaxSamplingFollowsTheDistribution) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 99;
  const std::vector<int> c = Histogram(p, logits, 20000);
  EXPECT_NEAR(c[0] / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(c[1] / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(c[2] / 20000.0, 0.2, 0.02);
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingTheMass) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 1.f;
  p.top_p = 0.6f;
  p.seed = 5;
  const std::vector<int> c = Histogram(p, logits, 5000);
  EXPECT_EQ(c[2], 0);
  EXPECT_GT(c[0], 0);
  EXPECT_GT(c[1], 0);

  // Flat logits over a large vocabulary: top_p = 0.5 keeps the 500 lowest ids (ties by id),
  // past the first partially sorted block.
  std::vector<float> flat(1000, 0.f);
  p.top_p = 0.5f;
  const std::vector<int> f = Histogram(p, flat, 5000);
  int inside = 0, outside = 0;
  for (size_t i = 0; i < f.size(); ++i) (i < 500 ? inside : outside) += f[i];
  EXPECT_EQ(outside, 0);
  EXPECT_EQ(inside, 5000);
  int beyond_first_block = 0;
  for (size_t i = 64; i < 500; ++i) beyond_first_block += f[i];
  EXPECT_GT(beyond_first_block, 0);
}

TEST(Sampler, MinPDropsTokensBelowTheFractionOfTheBest) {
  const std::vector<float> logits = {std::log(1.f), std::log(0.5f), std::log(0.05f)};
  for (int top_k : {0, 3}) {  // the unsorted and the sorted path
    SamplingParams p;
    p.temperature = 1.f;
    p.min_p = 0.1f;
    p.top_k = top_k;
    p.seed = 11;
    const std::vector<int> c = Histogram(p, logits, 5000);
    EXPECT_EQ(c[2], 0) << "top_k " << top_k;
    EXPECT_GT(c[1], 0) << "top_k " << top_k;
  }
}

TEST(Sampler, MaskedTokensAreNeverDrawn) {
  std::vector<float> logits(10, -INFINITY);
  logits[3] = 0.f;
  logits[7] = 0.f;
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 2;
  const std::vector<int> c = Histogram(p, logits, 2000);
  EXPECT_EQ(c[3] + c[7], 2000);
  EXPECT_GT(c[3], 0);
  EXPECT_GT(c[7], 0);
}

TEST(SamplingParams, ValidateNamesTheFieldAndRange) {
  EXPECT_TRUE(SamplingParams{}.Validate().ok());
  struct Case {
    const char* field;
    void (*set)(SamplingParams&);
  };
  const Case bad[] = {
      {"temperature", [](SamplingParams& p) { p.temperature = -0.1f; }},
      {"top_k", [](SamplingParams& p) { p.top_k = -1; }},
      {"top_p", [](SamplingParams& p) { p.top_p = 0.f; }},
      {"min_p", [](SamplingParams& p) { p.min_p = 1.f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0.f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = -1.f; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = NAN; }},
      {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = INFINITY; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = 2.01f; }},
      {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = NAN; }},
      {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = -2.5f; }},
      {"logprobs", [](SamplingParams& p) { p.logprobs = -1; }},
      {"logprobs", [](SamplingParams& p) { p.logprobs = 21; }},
  };
  for (const Case& c : bad) {
    SamplingParams p;
    c.set(p);
    const Status st = p.Validate();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(st.message().find(c.field), std::string::npos) << st.message();
  }
  const Status range = [] {
    SamplingParams p;
    p.presence_penalty = 3.f;
    return p.Validate();
  }();
  EXPECT_NE(range.message().find("[-2, 2]"), std::string::npos) << range.message();

  SamplingParams edge;
  edge.presence_penalty = -2.f;
  edge.frequency_penalty = 2.f;
  edge.repetition_penalty = 0.01f;
  edge.logprobs = 20;
  EXPECT_TRUE(edge.Validate().ok());
}

}  // namespace
}  // namespace engram
