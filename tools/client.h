// The gRPC client side shared by the commands that talk to a running engramd
// (generate --server, stats, bench serve): channel set-up, deadlines, status conversion and
// the option parsing they have in common.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "common/status.h"
#include "engram/v1/engram.grpc.pb.h"

namespace engram::cli {

// A plaintext channel to `address` ("host:port", loopback or a trusted network), accepting
// messages of any size from the server. Thread-safe: share it between threads.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

// Waits up to `timeout_s` for `channel` to connect; UNAVAILABLE naming `address` otherwise.
Status WaitConnected(grpc::Channel& channel, const std::string& address, double timeout_s);

// Sets a deadline `timeout_s` seconds from now (no deadline when timeout_s <= 0).
void SetTimeout(grpc::ClientContext* ctx, double timeout_s);

// grpc::Status -> Status with the same code and message ("" -> the code's name).
Status FromGrpc(const grpc::Status& st);

// Elements of a "1,2,3" option as token ids (each in [0, INT32_MAX]).
Result<std::vector<int32_t>> GetTokenIds(const Args& args, const std::string& key);

// Removes every "--NAME VALUE" / "--NAME=VALUE" from argv[first..argc) and returns the values
// in order (for options that may repeat, which Args keeps only once). argc shrinks.
Result<std::vector<std::string>> TakeRepeated(int* argc, char** argv, int first,
                                              const std::string& name);

// Whether argv[first..argc) holds "--NAME" or "--NAME=...".
bool HasOption(int argc, char** argv, int first, const std::string& name);

// Fetches GetModelInfo (deadline `timeout_s`).
Result<v1::ModelInfo> FetchModelInfo(v1::Engram::Stub& stub, double timeout_s);

// "stop", "length", "cancelled", "error" or "unspecified".
const char* FinishName(v1::FinishReason r);

}  // namespace engram::cli
