// EngramService: the engram.v1.Engram gRPC service over an EngineLoop. Handlers validate
// requests and map every failure to the fitting gRPC status with a message naming the field
// and the limit; the loop does the work. Before the model is loaded (SetLoop not yet called)
// every model RPC answers UNAVAILABLE.
//
// Thread safety: handlers run on gRPC's threads; SetLoop happens once, before or while they
// run.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "engram/v1/engram.grpc.pb.h"
#include "runtime/engine_loop.h"
#include "text/tokenizer.h"

namespace engram {

struct ServiceOptions {
  // Text prompts are encoded with special tokens (BOS where the tokenizer options say).
  bool add_special_tokens = true;
  int max_logprobs = 20;
  // The "authorization" metadata value -> allowed (ApiKeys::Check). Null: every call is
  // allowed. A refused call is UNAUTHENTICATED before the handler does anything else.
  std::function<bool(std::string_view)> authorize;
};

class EngramService final : public v1::Engram::Service {
 public:
  explicit EngramService(const ServiceOptions& options) : options_(options) {}

  // Publishes the loaded model. `loop` and `tokenizer` (may be null) must outlive the service.
  void SetLoop(EngineLoop* loop, std::shared_ptr<const Tokenizer> tokenizer, v1::ModelInfo info);

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                        v1::TokenizeResponse* resp) override;
  grpc::Status Detokenize(grpc::ServerContext* ctx, const v1::DetokenizeRequest* req,
                          v1::DetokenizeResponse* resp) override;
  grpc::Status GetModelInfo(grpc::ServerContext* ctx, const v1::GetModelInfoRequest* req,
                            v1::ModelInfo* resp) override;
  grpc::Status GetStats(grpc::ServerContext* ctx, const v1::GetStatsRequest* req,
                        v1::Stats* resp) override;

 private:
  // OK when the call may proceed (options_.authorize), else UNAUTHENTICATED.
  grpc::Status Authorize(const grpc::ServerContext& ctx) const;
  // Builds validated parameters from the request; the error is the RPC status.
  // prompt.chat through the model's chat template, encoded without adding special tokens.
  Result<std::vector<int32_t>> EncodeChat(const v1::ChatPrompt& chat) const;
  Result<GenerationParams> ToParams(const v1::GenerateRequest& req) const;

  ServiceOptions options_;
  std::atomic<EngineLoop*> loop_{nullptr};
  std::shared_ptr<const Tokenizer> tokenizer_;
  v1::ModelInfo info_;
  std::atomic<uint64_t> next_id_{1};
};

// Status -> grpc::Status with the same code and message.
grpc::Status ToGrpc(const Status& st);

// The ModelInfo message of a loaded engine.
v1::ModelInfo DescribeModel(const Engine& engine, const std::string& backend, bool has_tokenizer);

}  // namespace engram
