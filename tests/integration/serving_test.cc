// A real engramd (synth:tiny with DeepSeek-V3's tokenizer) driven through gRPC: streaming,
// concurrency, cancellation and deadlines, and the resources each frees.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "shared_daemon.h"

namespace engram::testing {
namespace {

class Serving : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    DaemonOptions o;
    o.max_running_seqs = 16;  // the 32-stream test also exercises the queue
    SharedDaemon::Start(o);
  }
  static void TearDownTestSuite() { SharedDaemon::Stop(); }
  void SetUp() override {
    ASSERT_NE(SharedDaemon::daemon, nullptr) << "the daemon did not start";
    stub_ = v1::Engram::NewStub(SharedDaemon::channel);
    ASSERT_TRUE(GetModelInfo(*stub_, &info_).ok());
  }
  static std::string address() { return SharedDaemon::daemon->address(); }

  std::unique_ptr<v1::Engram::Stub> stub_;
  v1::ModelInfo info_;
};

TEST_F(Serving, ModelInfoDescribesTheTinyModel) {
  EXPECT_EQ(info_.architecture(), "llama");
  EXPECT_EQ(info_.num_layers(), 3);
  EXPECT_EQ(info_.max_context(), 2048);
  EXPECT_TRUE(info_.has_tokenizer());
  EXPECT_GE(info_.vocab_size(), 128000);  // the vocabulary follows the tokenizer
  ASSERT_TRUE(info_.has_engram());
  EXPECT_EQ(info_.engram().layer_ids_size(), 1);
  EXPECT_EQ(info_.weights(), "bf16");
  EXPECT_EQ(info_.engram().variant(), "paper");
  EXPECT_EQ(info_.engram().row_dtype(), "BF16");
  EXPECT_EQ(info_.engram().row_bytes(), 16);  // the tiny preset: Dh 8
  EXPECT_EQ(info_.engram().table_bytes(), info_.engram().table_rows(0) * 16);
}

TEST_F(Serving, TextPromptStreamsToLengthWithUsage) {
  const StreamResult r = Generate(*stub_, TextRequest("The quick brown fox", 12));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.finish, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(r.finish_messages, 1);
  EXPECT_EQ(r.ids.size(), 12u);
  EXPECT_GE(r.messages, 2) << "tokens should stream, not arrive in one message";
  ASSERT_TRUE(r.has_usage);
  EXPECT_EQ(r.usage.completion_tokens(), 12);
  EXPECT_GE(r.usage.prompt_tokens(), 4);
  EXPECT_GT(r.usage.time_to_first_token_s(), 0);
  EXPECT_GE(r.usage.total_time_s(), r.usage.time_to_first_token_s());
  // The streamed text is the detokenized ids.
  v1::DetokenizeRequest dreq;
  for (int32_t t : r.ids) dreq.add_token_ids(t);
  dreq.set_skip_special_tokens(true);
  v1::DetokenizeResponse dresp;
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(10));
  ASSERT_TRUE(stub_->Detokenize(&ctx, dreq, &dresp).ok());
  EXPECT_EQ(r.text, dresp.text());
}

TEST_F(Serving, TokenIdPromptAndGreedyIsDeterministic) {
  const std::vector<int32_t> prompt = {100, 2000, 30000, 400, 5};
  const StreamResult a = Generate(*stub_, IdsRequest(prompt, 10));
  const StreamResult b = Generate(*stub_, IdsRequest(prompt, 10));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(a.finish, v1::FINISH_REASON_LENGTH);
  ASSERT_TRUE(a.has_usage);
  EXPECT_EQ(a.usage.prompt_tokens(), 5);
  EXPECT_EQ(a.usage.completion_tokens(), 10);
  EXPECT_EQ(a.ids, b.ids);
  for (int32_t t : a.ids) {
    EXPECT_GE(t, 0);
    EXPECT_LT(t, info_.vocab_size());
  }
}

TEST_F(Serving, TokenizeDetokenizeRoundTrip) {
  const std::string text = "Engram: conditional memory, héllo 世界!";
  v1::TokenizeRequest treq;
  treq.set_text(text);
  v1::TokenizeResponse tresp;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(10));
    ASSERT_TRUE(stub_->Tokenize(&ctx, treq, &tresp).ok());
  }
  ASSERT_GT(tresp.token_ids_size(), 3);
  v1::DetokenizeRequest dreq;
  *dreq.mutable_token_ids() = tresp.token_ids();
  v1::DetokenizeResponse dresp;
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(10));
  ASSERT_TRUE(stub_->Detokenize(&ctx, dreq, &dresp).ok());
  EXPECT_EQ(dresp.text(), text);
}

TEST_F(Serving, StopStringEndsTheStreamWithoutTheStopText) {
  const std::vector<int32_t> prompt = {10, 20, 30};
  const StreamResult full = Generate(*stub_, IdsRequest(prompt, 16));
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  // A text delta from the middle of the greedy output is the stop string.
  std::string stop;
  for (size_t i = full.deltas.size() / 2; i < full.deltas.size() && stop.empty(); ++i) {
    stop = full.deltas[i];
  }
  ASSERT_FALSE(stop.empty()) << "no text in the second half of the output";
  v1::GenerateRequest req = IdsRequest(prompt, 16);
  req.add_stop(stop);
  const StreamResult r = Generate(*stub_, req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.finish, v1::FINISH_REASON_STOP);
  EXPECT_EQ(r.text, full.text.substr(0, full.text.find(stop))) << "stop \"" << stop << "\"";
  EXPECT_LT(r.ids.size(), full.ids.size());
}

// 32 concurrent greedy streams (16 running, 16 queued) each equal the same prompt run alone.
TEST_F(Serving, ConcurrentGreedyStreamsEqualSequentialOutputs) {
  constexpr int kStreams = 32;
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < kStreams; ++i) {
    std::vector<int32_t> prompt;
    for (int j = 0; j < 3 + (i * 7) % 29; ++j) prompt.push_back((i * 7919 + j * 104729) % 120000);
    reqs.push_back(IdsRequest(prompt, 16 + i % 9));
  }
  std::vector<StreamResult> alone(kStreams), together(kStreams);
  for (int i = 0; i < kStreams; ++i) {
    alone[i] = Generate(*stub_, reqs[i]);
    ASSERT_TRUE(alone[i].status.ok()) << i << ": " << alone[i].status.error_message();
  }
  std::vector<std::thread> threads;
  std::atomic<int> go{0};
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      auto stub = v1::Engram::NewStub(Connect(address()));
      ++go;
      while (go.load() < kStreams) std::this_thread::yield();
      together[i] = Generate(*stub, reqs[i], 120);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].finish, v1::FINISH_REASON_LENGTH) << i;
    EXPECT_EQ(together[i].ids, alone[i].ids) << "stream " << i << " differs when batched";
    EXPECT_EQ(together[i].text, alone[i].text) << i;
  }
  v1::Stats s;
  EXPECT_TRUE(WaitForStats(*stub_, Idle, &s)) << s.DebugString();
}

// Plain greedy requests are sampled on the engine's backend (only the token id leaves it);
// asking for logprobs samples on the host from the whole logits row instead. Both give the same
// tokens and text, run alone and sharing steps.
TEST_F(Serving, GreedyTokensAreTheSameWithAndWithoutLogprobs) {
  const std::vector<int32_t> prompt = {7, 700, 7000, 70000, 17};
  const v1::GenerateRequest plain = IdsRequest(prompt, 14);
  v1::GenerateRequest with_logprobs = plain;
  with_logprobs.set_logprobs(1);
  const StreamResult a = Generate(*stub_, plain);
  const StreamResult b = Generate(*stub_, with_logprobs);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  EXPECT_EQ(a.ids.size(), 14u);
  EXPECT_EQ(b.ids, a.ids);
  EXPECT_EQ(b.text, a.text);
  StreamResult c, d;
  std::thread tc([&] { c = Generate(*v1::Engram::NewStub(Connect(address())), plain); });
  std::thread td([&] { d = Generate(*v1::Engram::NewStub(Connect(address())), with_logprobs); });
  tc.join();
  td.join();
  ASSERT_TRUE(c.status.ok()) << c.status.error_message();
  ASSERT_TRUE(d.status.ok()) << d.status.error_message();
  EXPECT_EQ(c.ids, a.ids);
  EXPECT_EQ(d.ids, a.ids);
}

TEST_F(Serving, CancellationMidStreamFreesResources) {
  v1::Stats before;
  ASSERT_TRUE(WaitForStats(*stub_, Idle, &before));
  std::vector<int32_t> prompt = {11, 22, 33, 44};
  int seen = 0;
  const StreamResult r = Generate(*stub_, IdsRequest(prompt, 2040), 60,
                                  [&](const v1::GenerateResponse&, grpc::ClientContext& ctx) {
                                    if (++seen == 3) ctx.TryCancel();
                                  });
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED) << r.status.error_message();
  EXPECT_LT(r.ids.size(), 2040u);
  v1::Stats after;
  EXPECT_TRUE(WaitForStats(
      *stub_,
      [&](const v1::Stats& s) {
        return Idle(s) && Reason(s, "cancelled") == Reason(before, "cancelled") + 1;
      },
      &after))
      << "before:\n"
      << before.DebugString() << "after:\n"
      << after.DebugString();
  EXPECT_EQ(after.requests_finished(), before.requests_finished() + 1);
  // The daemon keeps serving.
  EXPECT_TRUE(Generate(*stub_, IdsRequest(prompt, 4)).status.ok());
}

TEST_F(Serving, DeadlineExceededFreesResources) {
  v1::Stats before;
  ASSERT_TRUE(WaitForStats(*stub_, Idle, &before));
  const StreamResult r = Generate(*stub_, IdsRequest({5, 6, 7, 8}, 2040), /*timeout_s=*/0.15);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << r.status.error_message();
  v1::Stats after;
  EXPECT_TRUE(WaitForStats(
      *stub_,
      [&](const v1::Stats& s) {
        return Idle(s) && s.requests_finished() == before.requests_finished() + 1;
      },
      &after))
      << "before:\n"
      << before.DebugString() << "after:\n"
      << after.DebugString();
  // Ended by the deadline (error) or by gRPC's cancellation of the expired call (cancelled).
  EXPECT_EQ(Reason(after, "error") + Reason(after, "cancelled"),
            Reason(before, "error") + Reason(before, "cancelled") + 1);
  EXPECT_TRUE(Generate(*stub_, IdsRequest({5, 6, 7, 8}, 4)).status.ok());
}

TEST_F(Serving, StatsCountEveryRequest) {
  v1::Stats before, after;
  ASSERT_TRUE(WaitForStats(*stub_, Idle, &before));
  ASSERT_TRUE(Generate(*stub_, IdsRequest({1, 2, 3}, 5)).status.ok());
  v1::GenerateRequest bad = IdsRequest({1, 2, 3}, 5);
  bad.mutable_sampling()->set_temperature(-1);
  ASSERT_FALSE(Generate(*stub_, bad).status.ok());
  ASSERT_TRUE(WaitForStats(*stub_, Idle, &after));
  EXPECT_EQ(after.requests_received(), before.requests_received() + 2);
  EXPECT_EQ(after.requests_rejected(), before.requests_rejected() + 1);
  EXPECT_EQ(after.requests_finished(), before.requests_finished() + 1);
  EXPECT_EQ(Reason(after, "length"), Reason(before, "length") + 1);
  EXPECT_EQ(after.generation_tokens(), before.generation_tokens() + 5);
  EXPECT_EQ(after.prompt_tokens(), before.prompt_tokens() + 3);
  EXPECT_GT(after.steps(), before.steps());
  EXPECT_GT(after.kv_blocks_total(), 0);
  EXPECT_EQ(after.sequence_slots_total(), 16);
}

}  // namespace
}  // namespace engram::testing
