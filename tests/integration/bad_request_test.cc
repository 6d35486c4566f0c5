// Each bad request gets the fitting gRPC status with a message naming the field, and the
// daemon keeps serving afterwards.
#include <gtest/gtest.h>

#include <string>

#include "shared_daemon.h"

namespace engram::testing {
namespace {

constexpr int kMaxMessageBytes = 1 << 20;

struct BadCase {
  const char* name;
  std::function<v1::GenerateRequest()> make;
  grpc::StatusCode code;
  const char* field;  // the message must contain it
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

std::vector<int32_t> Ids(int n, int32_t base = 100) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(base + i % 1000);
  return v;
}

v1::GenerateRequest WithSampling(const std::function<void(v1::SamplingParams*)>& f) {
  v1::GenerateRequest r = IdsRequest({1, 2, 3}, 4);
  f(r.mutable_sampling());
  return r;
}

const BadCase kCases[] = {
    // stop and request_id are bytes on the wire, so invalid UTF-8 reaches the service (as a
    // proto3 string it failed inside gRPC: INTERNAL with an empty message).
    {"InvalidUtf8Stop",
     [] {
       v1::GenerateRequest r = IdsRequest({1, 2, 3}, 4);
       r.add_stop("ok");
       r.add_stop(std::string("a\xc3(", 3));
       return r;
     },
     grpc::StatusCode::INVALID_ARGUMENT, "stop[1]: byte 1 is not valid UTF-8"},
    {"InvalidUtf8RequestId",
     [] {
       v1::GenerateRequest r = IdsRequest({1, 2, 3}, 4);
       r.set_request_id(std::string("id-\xff", 4));
       return r;
     },
     grpc::StatusCode::INVALID_ARGUMENT, "request_id: byte 3 is not valid UTF-8"},
    {"LongRequestId",
     [] {
       v1::GenerateRequest r = IdsRequest({1, 2, 3}, 4);
       r.set_request_id(std::string(300, 'x'));
       return r;
     },
     grpc::StatusCode::INVALID_ARGUMENT, "request_id is 300 bytes"},
    {"NoPrompt", [] { return v1::GenerateRequest(); }, grpc::StatusCode::INVALID_ARGUMENT,
     "prompt"},
    {"EmptyText", [] { return TextRequest("", 4); }, grpc::StatusCode::INVALID_ARGUMENT,
     "prompt.text"},
    {"EmptyTokenIds", [] { return IdsRequest({}, 4); }, grpc::StatusCode::INVALID_ARGUMENT,
     "token_ids"},
    {"IdAboveVocabulary",
     [] {
       return IdsRequest({1, 2, 100000000}, 4);
     },
     grpc::StatusCode::OUT_OF_RANGE, "token_ids[2]"},
    {"NegativeId",
     [] {
       return IdsRequest({-5, 1}, 4);
     },
     grpc::StatusCode::OUT_OF_RANGE, "token_ids[0]"},
    {"PromptFillsTheContext", [] { return IdsRequest(Ids(2048), 1); },
     grpc::StatusCode::OUT_OF_RANGE, "prompt"},
    {"PromptBeyondTheContext", [] { return IdsRequest(Ids(3000), 1); },
     grpc::StatusCode::OUT_OF_RANGE, "prompt"},
    {"MaxTokensBeyondTheContext", [] { return IdsRequest(Ids(10), 2039); },
     grpc::StatusCode::OUT_OF_RANGE, "max_tokens"},
    {"NegativeMaxTokens", [] { return IdsRequest(Ids(10), -1); },
     grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
    {"NegativeTemperature",
     [] { return WithSampling([](v1::SamplingParams* s) { s->set_temperature(-0.5f); }); },
     grpc::StatusCode::INVALID_ARGUMENT, "temperature"},
    {"TopPAboveOne", [] { return WithSampling([](v1::SamplingParams* s) { s->set_top_p(1.5f); }); },
     grpc::StatusCode::INVALID_ARGUMENT, "top_p"},
    {"NegativeTopP",
     [] { return WithSampling([](v1::SamplingParams* s) { s->set_top_p(-0.1f); }); },
     grpc::StatusCode::INVALID_ARGUMENT, "top_p"},
    {"NegativeTopK", [] { return WithSampling([](v1::SamplingParams* s) { s->set_top_k(-1); }); },
     grpc::StatusCode::INVALID_ARGUMENT, "top_k"},
    {"MinPOne", [] { return WithSampling([](v1::SamplingParams* s) { s->set_min_p(1.0f); }); },
     grpc::StatusCode::INVALID_ARGUMENT, "min_p"},
    {"TooManyLogprobs",
     [] {
       v1::GenerateRequest r = IdsRequest({1, 2, 3}, 4);
       r.set_logprobs(21);
       return r;
     },
     grpc::StatusCode::INVALID_ARGUMENT, "logprobs"},
    {"StopTokenOutsideVocabulary",
     [] {
       v1::GenerateRequest r = IdsRequest({1, 2, 3}, 4);
       r.add_stop_token_ids(-1);
       return r;
     },
     grpc::StatusCode::OUT_OF_RANGE, "stop_token_ids"},
    {"EmptyStopString",
     [] {
       v1::GenerateRequest r = IdsRequest({1, 2, 3}, 4);
       r.add_stop("");
       return r;
     },
     grpc::StatusCode::INVALID_ARGUMENT, "stop[0]"},
    {"MessageAboveTheLimit",
     [] { return TextRequest(std::string(kMaxMessageBytes + 1000, 'a'), 4); },
     grpc::StatusCode::RESOURCE_EXHAUSTED, "larger than max"},
};

class BadRequest : public ::testing::TestWithParam<BadCase> {
 protected:
  static void SetUpTestSuite() {
    DaemonOptions o;
    o.max_message_bytes = kMaxMessageBytes;
    SharedDaemon::Start(o);
  }
  static void TearDownTestSuite() { SharedDaemon::Stop(); }
  void SetUp() override {
    ASSERT_NE(SharedDaemon::daemon, nullptr) << "the daemon did not start";
    stub_ = v1::Engram::NewStub(SharedDaemon::channel);
  }
  // A good request after a bad one still succeeds.
  void ExpectStillServing() {
    const StreamResult ok = Generate(*stub_, TextRequest("still serving?", 3));
    EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
    EXPECT_EQ(ok.ids.size(), 3u);
  }
  std::unique_ptr<v1::Engram::Stub> stub_;
};

TEST_P(BadRequest, GetsTheRightCodeNamingTheField) {
  const BadCase& c = GetParam();
  const StreamResult r = Generate(*stub_, c.make(), 30);
  EXPECT_EQ(r.status.error_code(), c.code) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find(c.field), std::string::npos)
      << "message \"" << r.status.error_message() << "\" does not name " << c.field;
  EXPECT_EQ(r.messages, 0) << "a refused request streams nothing";
  ExpectStillServing();
}

INSTANTIATE_TEST_SUITE_P(Generate, BadRequest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<BadCase>& i) { return i.param.name; });

// Tests that are not one Generate case share the fixture (and its daemon).
class BadRequestMisc : public BadRequest {};

// prompt.text is a bytes field, so invalid UTF-8 reaches the service, which refuses it with
// INVALID_ARGUMENT naming the field and the byte offset; the daemon keeps serving.
TEST_F(BadRequestMisc, InvalidUtf8TextIsRefused) {
  const StreamResult r = Generate(*stub_, TextRequest(std::string("ab\xff\xfe cd", 7), 4), 30);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << r.status.error_code() << ": " << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("prompt.text"), std::string::npos)
      << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("2"), std::string::npos)  // the byte offset
      << r.status.error_message();
  EXPECT_EQ(r.messages, 0);
  ExpectStillServing();
}

TEST_F(BadRequestMisc, DetokenizeIdOutsideTheVocabulary) {
  v1::DetokenizeRequest req;
  req.add_token_ids(5);
  req.add_token_ids(100000000);
  v1::DetokenizeResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(10));
  const grpc::Status st = stub_->Detokenize(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::OUT_OF_RANGE) << st.error_message();
  EXPECT_NE(st.error_message().find("token_ids[1]"), std::string::npos) << st.error_message();
  ExpectStillServing();
}

}  // namespace
}  // namespace engram::testing
