// The serving loop's two sampling paths. Requests whose next token is the argmax of the raw
// logits (temperature 0, no penalties, no logprobs) are sampled on the backend (StepChunk::
// greedy) and must give exactly the tokens of greedy sampling on the host, the path every
// request took before, with the same stop-token, max_tokens and usage handling; the others
// still sample from logits rows, in the same steps.
#include "runtime/engine_loop.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/model_files.h"
#include "model/sampler.h"

namespace engram {
namespace {

std::unique_ptr<Engine> MakeEngine() {
  auto files = OpenModel("synth:tiny");
  EXPECT_TRUE(files.ok()) << files.status().ToString();
  EngineOptions opt;
  opt.max_seqs = 8;
  opt.kv_tokens = 4096;
  opt.backend.threads = 2;
  auto e = Engine::Create(std::move(files).value(), opt);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(e).value();
}

std::vector<int32_t> Prompt(int salt, int n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 131 + salt * 977 + 3) % vocab);
  return ids;
}

// n greedy tokens the way the loop sampled every request before: full logits rows from the
// plain Step, the host sampler's Argmax.
std::vector<int32_t> HostGreedy(Engine& e, const std::vector<int32_t>& prompt, int n) {
  auto seq = e.AddSequence();
  EXPECT_TRUE(seq.ok());
  std::vector<int32_t> out;
  StepChunk ch{*seq, prompt};
  auto logits = e.Step({&ch, 1}, false);
  for (int i = 0; i < n && logits.ok(); ++i) {
    out.push_back(Argmax(*logits));
    StepChunk next{*seq, std::span<const int32_t>(&out.back(), 1)};
    if (i + 1 < n) logits = e.Step({&next, 1}, false);
  }
  EXPECT_TRUE(logits.ok()) << logits.status().ToString();
  e.RemoveSequence(*seq);
  return out;
}

struct Outcome {
  std::vector<int32_t> tokens;
  size_t logprobs = 0;
  FinishReason finish = FinishReason::kNone;
  Status status;
  int completion_tokens = 0;
};

Outcome Drain(RequestState& r) {
  Outcome o;
  StreamEvent ev;
  while (r.Pop(&ev, std::chrono::milliseconds(60000))) {
    o.tokens.insert(o.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
    o.logprobs += ev.logprobs.size();
    if (ev.finish != FinishReason::kNone) {
      o.finish = ev.finish;
      o.status = ev.status;
      o.completion_tokens = ev.completion_tokens;
      break;
    }
  }
  return o;
}

TEST(EngineLoop, GreedyOnTheDeviceEqualsGreedyOnTheHost) {
  constexpr int kTokens = 12;
  auto reference = MakeEngine();
  const int64_t V = reference->config().vocab_size;
  std::vector<std::vector<int32_t>> prompts, want;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(Prompt(i, 5 + 3 * i, V));
    want.push_back(HostGreedy(*reference, prompts.back(), kTokens));
  }

  EngineLoop loop(MakeEngine(), nullptr, ServingOptions{});
  auto submit = [&](const std::string& id, int prompt, auto&& adjust) {
    GenerationParams p;
    p.prompt = prompts[static_cast<size_t>(prompt)];
    p.max_tokens = kTokens;
    p.ignore_eos = true;
    adjust(p);
    auto r = loop.Submit(id, std::move(p), std::nullopt);
    EXPECT_TRUE(r.ok()) << id << ": " << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  };
  auto plain = [](GenerationParams&) {};
  // All submitted before the loop's next step, so they share steps: device and host sampling
  // in the same batch.
  std::vector<std::shared_ptr<RequestState>> greedy;
  for (int i = 0; i < 4; ++i) greedy.push_back(submit("greedy" + std::to_string(i), i, plain));
  // Logprobs read the whole row: sampled on the host, same tokens.
  auto logprobs = submit("logprobs", 0, [](GenerationParams& p) {
    p.logprobs = 2;
    p.sampling.logprobs = 2;
  });
  // top_k / top_p / min_p / seed do not matter at temperature 0: still the device path.
  auto filtered = submit("filtered", 1, [](GenerationParams& p) {
    p.sampling.top_k = 3;
    p.sampling.top_p = 0.5f;
    p.sampling.min_p = 0.2f;
    p.sampling.seed = 7;
  });
  // A stop token id ends the request at its first occurrence (included in the tokens).
  const int32_t stop_id = want[2][5];
  auto stopped = submit("stop", 2, [&](GenerationParams& p) { p.stop_token_ids = {stop_id}; });
  // A penalty changes the logits: host path, still finishes normally.
  auto penalized =
      submit("penalty", 3, [](GenerationParams& p) { p.sampling.repetition_penalty = 1.3f; });
  ASSERT_TRUE(greedy[3] && logprobs && filtered && stopped && penalized);

  for (int i = 0; i < 4; ++i) {
    const Outcome o = Drain(*greedy[i]);
    EXPECT_EQ(o.finish, FinishReason::kLength) << i << ": " << o.status.ToString();
    EXPECT_EQ(o.tokens, want[i]) << "request " << i;
    EXPECT_EQ(o.completion_tokens, kTokens);
    EXPECT_EQ(o.logprobs, 0u);
  }
  const Outcome lp = Drain(*logprobs);
  EXPECT_EQ(lp.tokens, want[0]);
  EXPECT_EQ(lp.logprobs, static_cast<size_t>(kTokens));
  EXPECT_EQ(Drain(*filtered).tokens, want[1]);
  const Outcome st = Drain(*stopped);
  EXPECT_EQ(st.finish, FinishReason::kStop);
  const auto first = std::find(want[2].begin(), want[2].end(), stop_id);
  EXPECT_EQ(st.tokens, std::vector<int32_t>(want[2].begin(), first + 1));
  EXPECT_EQ(st.completion_tokens, static_cast<int>(st.tokens.size()));
  const Outcome pen = Drain(*penalized);
  EXPECT_EQ(pen.finish, FinishReason::kLength) << pen.status.ToString();
  EXPECT_EQ(pen.tokens.size(), static_cast<size_t>(kTokens));

  const ServingStats s = loop.Stats();
  EXPECT_EQ(s.requests_finished, 8);
  EXPECT_EQ(s.generation_tokens, 7 * kTokens + static_cast<int64_t>(st.tokens.size()));
}

// Weights that overflow (here: a final norm of NaN) make every logit NaN. Neither sampling path
// samples from them: each request ends with INTERNAL naming the cause, the count shows in the
// stats, and the loop keeps serving.
TEST(EngineLoop, NonFiniteLogitsEndTheRequestsWithInternal) {
  auto files = OpenModel("synth:tiny");
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  const TensorInfo* norm = files->store.Info("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  Tensor nan = HostTensor(DType::kF32, norm->shape);
  for (int64_t i = 0; i < nan.numel(); ++i) {
    nan.ptr<float>()[i] = std::numeric_limits<float>::quiet_NaN();
  }
  files->store.AddInMemory("model.norm.weight", nan);
  EngineOptions opt;
  opt.max_seqs = 4;
  opt.kv_tokens = 1024;
  opt.backend.threads = 2;
  auto engine = Engine::Create(std::move(files).value(), opt);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const int64_t vocab = (*engine)->config().vocab_size;
  EngineLoop loop(std::move(engine).value(), nullptr, ServingOptions{});
  for (const bool greedy : {true, false, true}) {
    GenerationParams p;
    p.prompt = Prompt(greedy ? 1 : 2, 5, vocab);
    p.max_tokens = 4;
    if (!greedy) p.sampling.temperature = 0.8f;  // sampled on the host from logits rows
    auto r = loop.Submit(greedy ? "nan-greedy" : "nan-sampled", std::move(p), std::nullopt);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const Outcome o = Drain(**r);
    EXPECT_EQ(o.finish, FinishReason::kError);
    EXPECT_EQ(o.status.code(), StatusCode::kInternal) << o.status.ToString();
    EXPECT_NE(o.status.message().find("logits hold NaN or Inf"), std::string::npos)
        << o.status.message();
    EXPECT_TRUE(o.tokens.empty());
  }
  const ServingStats s = loop.Stats();
  EXPECT_EQ(s.nonfinite_logits, 3);
  EXPECT_EQ(s.finished_by_reason.at("error"), 3);
  EXPECT_EQ(loop.InFlight(), 0);
  EXPECT_EQ(s.kv_blocks_free, s.kv_blocks_total);
}

}  // namespace
}  // namespace engram
