#include "client.h"

#include <chrono>
#include <cstring>

namespace engram::cli {

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments ch_args;
  ch_args.SetMaxReceiveMessageSize(-1);
  ch_args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), ch_args);
}

Status WaitConnected(grpc::Channel& channel, const std::string& address, double timeout_s) {
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(
                            std::chrono::duration<double>(timeout_s));
  if (channel.WaitForConnected(deadline)) return Status::Ok();
  return Unavailable("cannot connect to engramd at {} within {} s (is it running? see --server)",
                     address, timeout_s);
}

void SetTimeout(grpc::ClientContext* ctx, double timeout_s) {
  if (timeout_s <= 0) return;
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(
                        std::chrono::duration<double>(timeout_s)));
}

Status FromGrpc(const grpc::Status& st) {
  if (st.ok()) return Status::Ok();
  return Status(static_cast<StatusCode>(st.error_code()), st.error_message());
}

Result<std::vector<int32_t>> GetTokenIds(const Args& args, const std::string& key) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<long long> ids64, args.GetIntList(key));
  std::vector<int32_t> ids;
  ids.reserve(ids64.size());
  for (size_t i = 0; i < ids64.size(); ++i) {
    if (ids64[i] < 0 || ids64[i] > INT32_MAX) {
      return OutOfRange("option --{}: element {} = {} is not a token id (0..{})", key, i, ids64[i],
                        INT32_MAX);
    }
    ids.push_back(static_cast<int32_t>(ids64[i]));
  }
  return ids;
}

Result<std::vector<std::string>> TakeRepeated(int* argc, char** argv, int first,
                                              const std::string& name) {
  const std::string flag = "--" + name;
  const std::string prefix = flag + "=";
  std::vector<std::string> values;
  int out = first;
  for (int i = first; i < *argc; ++i) {
    const char* a = argv[i];
    if (flag == a) {
      if (i + 1 >= *argc) return InvalidArgument("option {} needs a value", flag);
      values.emplace_back(argv[++i]);
    } else if (std::strncmp(a, prefix.c_str(), prefix.size()) == 0) {
      values.emplace_back(a + prefix.size());
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return values;
}

bool HasOption(int argc, char** argv, int first, const std::string& name) {
  const std::string flag = "--" + name;
  const std::string prefix = flag + "=";
  for (int i = first; i < argc; ++i) {
    if (flag == argv[i] || std::strncmp(argv[i], prefix.c_str(), prefix.size()) == 0) return true;
  }
  return false;
}

Result<v1::ModelInfo> FetchModelInfo(v1::Engram::Stub& stub, double timeout_s) {
  grpc::ClientContext ctx;
  SetTimeout(&ctx, timeout_s);
  v1::ModelInfo info;
  grpc::Status st = stub.GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
  if (!st.ok()) return FromGrpc(st).WithContext("GetModelInfo");
  return info;
}

const char* FinishName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    case v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return "unspecified";
  }
}

}  // namespace engram::cli
