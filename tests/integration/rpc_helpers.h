// Client-side helpers of the integration tests: stubs with deadlines, a whole Generate stream
// collected into one value, GetStats polling, and grpc.health.v1 Check through a generic stub
// (the health proto is not installed, its two messages are encoded by hand).
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engram/v1/engram.grpc.pb.h"

namespace engram::testing {

inline std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

inline std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// Everything one Generate call returned.
struct StreamResult {
  grpc::Status status;
  std::vector<int32_t> ids;
  std::string text;
  std::vector<std::string> deltas;  // each message's text
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  bool has_usage = false;
  v1::Usage usage;
  int messages = 0;
  int finish_messages = 0;  // messages carrying a finish reason (must be 1 when OK)
};

// Runs Generate to its end. `on_message` (optional) sees each message with the context (e.g.
// to cancel); `timeout_s` bounds the whole call.
inline StreamResult Generate(
    v1::Engram::Stub& stub, const v1::GenerateRequest& req, double timeout_s = 60,
    const std::function<void(const v1::GenerateResponse&, grpc::ClientContext&)>& on_message = {}) {
  StreamResult r;
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout_s));
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    ++r.messages;
    r.ids.insert(r.ids.end(), msg.token_ids().begin(), msg.token_ids().end());
    r.text += msg.text();
    r.deltas.push_back(msg.text());
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      r.finish = msg.finish_reason();
      ++r.finish_messages;
    }
    if (msg.has_usage()) {
      r.has_usage = true;
      r.usage = msg.usage();
    }
    if (on_message) on_message(msg, ctx);
  }
  r.status = reader->Finish();
  return r;
}

inline v1::GenerateRequest IdsRequest(const std::vector<int32_t>& ids, int max_tokens) {
  v1::GenerateRequest req;
  for (int32_t t : ids) req.mutable_token_ids()->add_ids(t);
  req.set_max_tokens(max_tokens);
  req.set_ignore_eos(true);
  return req;
}

inline v1::GenerateRequest TextRequest(const std::string& text, int max_tokens) {
  v1::GenerateRequest req;
  req.set_text(text);
  req.set_max_tokens(max_tokens);
  req.set_ignore_eos(true);
  return req;
}

inline grpc::Status GetStats(v1::Engram::Stub& stub, v1::Stats* out, double timeout_s = 10) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout_s));
  return stub.GetStats(&ctx, v1::GetStatsRequest(), out);
}

inline grpc::Status GetModelInfo(v1::Engram::Stub& stub, v1::ModelInfo* out,
                                 double timeout_s = 10) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout_s));
  return stub.GetModelInfo(&ctx, v1::GetModelInfoRequest(), out);
}

// Polls GetStats until `done` holds (true) or `timeout_s` passes (false); `last` gets the last
// stats read.
inline bool WaitForStats(v1::Engram::Stub& stub, const std::function<bool(const v1::Stats&)>& done,
                         v1::Stats* last, double timeout_s = 10) {
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                       std::chrono::duration<double>(timeout_s));
  while (true) {
    if (GetStats(stub, last).ok() && done(*last)) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Nothing running or waiting, every KV block and sequence slot free.
inline bool Idle(const v1::Stats& s) {
  return s.requests_running() == 0 && s.requests_waiting() == 0 &&
         s.kv_blocks_free() == s.kv_blocks_total() &&
         s.sequence_slots_free() == s.sequence_slots_total();
}

inline int64_t Reason(const v1::Stats& s, const std::string& reason) {
  auto it = s.finished_by_reason().find(reason);
  return it == s.finished_by_reason().end() ? 0 : it->second;
}

// grpc.health.v1.HealthCheckResponse.ServingStatus.
enum class Health { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

// grpc.health.v1.Health/Check for `service` ("" = the server as a whole). The status of the
// call goes to *call_status; the decoded serving status is returned.
inline Health HealthCheck(const std::shared_ptr<grpc::Channel>& channel, grpc::Status* call_status,
                          const std::string& service = "", double timeout_s = 5) {
  // HealthCheckRequest { string service = 1; }
  std::string req_bytes;
  if (!service.empty()) {
    req_bytes.push_back(0x0a);
    req_bytes.push_back(static_cast<char>(service.size()));  // short names only
    req_bytes += service;
  }
  grpc::Slice slice(req_bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout_s));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  *call_status = done.get_future().get();
  if (!call_status->ok()) return Health::kUnknown;
  // HealthCheckResponse { ServingStatus status = 1; }: 0x08 <varint>, or empty for UNKNOWN.
  std::string bytes;
  std::vector<grpc::Slice> slices;
  if (response.Dump(&slices).ok()) {
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (bytes.size() >= 2 && bytes[0] == 0x08) return static_cast<Health>(bytes[1]);
  return Health::kUnknown;
}

}  // namespace engram::testing
