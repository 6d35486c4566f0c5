#include "client.h"

#include <grpcpp/support/client_interceptor.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

namespace engram::cli {

namespace {

// Adds "authorization: Bearer KEY" to every call of the channel it is installed on (call
// credentials would need TLS; keys must also work on a plaintext loopback channel).
class KeyInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit KeyInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      m->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    m->Proceed();
  }

 private:
  const std::string* value_;
};

class KeyInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit KeyInterceptorFactory(std::string key) : value_("Bearer " + std::move(key)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new KeyInterceptor(&value_);
  }

 private:
  const std::string value_;  // outlives the channel's calls: the channel owns the factory
};

Result<std::string> ReadPem(const Args& args, const std::string& option) {
  auto path = args.Get(option);
  if (!path) return std::string();
  std::ifstream in(*path, std::ios::binary);
  if (!in) return NotFound("--{} {}: cannot read the file", option, *path);
  std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return InvalidArgument("--{} {}: not a PEM file (expected \"-----BEGIN ...\")", option, *path);
  }
  return pem;
}

}  // namespace

std::set<std::string> WithSecurityOptions(std::set<std::string> names) {
  names.insert({"api-key", "tls-ca", "tls-cert", "tls-key", "tls-server-name"});
  return names;
}

Result<ClientSecurity> ClientSecurityFromArgs(const Args& args) {
  ClientSecurity s;
  if (auto k = args.Get("api-key")) {
    s.api_key = *k;
  } else if (const char* env = std::getenv("ENGRAM_API_KEY")) {
    s.api_key = env;
  }
  ENGRAM_ASSIGN_OR_RETURN(s.ca_pem, ReadPem(args, "tls-ca"));
  ENGRAM_ASSIGN_OR_RETURN(s.cert_pem, ReadPem(args, "tls-cert"));
  ENGRAM_ASSIGN_OR_RETURN(s.key_pem, ReadPem(args, "tls-key"));
  s.ca_path = args.Get("tls-ca").value_or("");
  s.server_name = args.Get("tls-server-name").value_or("");
  if (s.cert_pem.empty() != s.key_pem.empty()) {
    return InvalidArgument("--tls-cert and --tls-key go together");
  }
  s.tls = !s.ca_pem.empty() || !s.cert_pem.empty();
  if (!s.tls && !s.server_name.empty()) {
    return InvalidArgument("--tls-server-name needs --tls-ca (TLS)");
  }
  return s;
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const ClientSecurity& security) {
  grpc::ChannelArguments ch_args;
  ch_args.SetMaxReceiveMessageSize(-1);
  ch_args.SetMaxSendMessageSize(-1);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (security.tls) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = security.ca_pem;
    o.pem_private_key = security.key_pem;
    o.pem_cert_chain = security.cert_pem;
    creds = grpc::SslCredentials(o);
    if (!security.server_name.empty()) {
      ch_args.SetSslTargetNameOverride(security.server_name);
    }
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> inter;
  if (!security.api_key.empty()) {
    inter.push_back(std::make_unique<KeyInterceptorFactory>(security.api_key));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, creds, ch_args,
                                                                 std::move(inter));
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
