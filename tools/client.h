// The gRPC client side shared by the commands that talk to a running engramd
// (generate --server, stats, bench serve): channel set-up, deadlines, status conversion and
// the option parsing they have in common.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "args.h"
#include "common/status.h"
#include "engram/v1/engram.grpc.pb.h"

namespace engram::cli {

// How a client reaches an engramd whose listener has TLS or API keys (docs/operations.md
// "Security"): --api-key KEY (else $ENGRAM_API_KEY), sent as "authorization: Bearer KEY" on
// every call; --tls-ca PEM (TLS, trusting the CA in PEM); --tls-cert PEM --tls-key PEM (a
// client certificate, for mutual TLS); --tls-server-name NAME (the name the server's
// certificate must carry, when it is not the host of --server).
struct ClientSecurity {
  std::string api_key;
  bool tls = false;
  std::string ca_path, ca_pem, cert_pem, key_pem, server_name;
};
// `names` plus the options above, for Args::Parse.
std::set<std::string> WithSecurityOptions(std::set<std::string> names);
// Reads the options above (and the PEM files they name); INVALID_ARGUMENT / NOT_FOUND naming
// the option.
Result<ClientSecurity> ClientSecurityFromArgs(const Args& args);

// A channel to `address` ("host:port"), plaintext unless `security` asks for TLS, adding the
// API key (if any) to every call, accepting messages of any size from the server.
// Thread-safe: share it between threads.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const ClientSecurity& security = {});

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
