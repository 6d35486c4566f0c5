// TLS and API keys on a real engramd, both listeners, with real clients: C++ gRPC (no key,
// a wrong key, the right key; health without a key; TLS trusting the test CA, a plaintext
// client, a client trusting another CA; mutual TLS with and without a client certificate), the
// engram CLI (--tls-ca, --api-key), curl over https (401 without or with a wrong key, 200 with
// it; /health open), the OpenAI Node SDK over https, and engramd --check-config refusing a
// remote listener without TLS or keys. Certificates are made by openssl in the test.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "../support/shell.h"
#include "../support/temp_dir.h"
#include "../support/test_certs.h"
#include "daemon_process.h"
#include "rpc_helpers.h"

namespace engram::testing {
namespace {

constexpr const char* kKey = "sesame-0123456789-key";

std::shared_ptr<grpc::Channel> TlsChannel(const std::string& address, const TestCerts& certs,
                                          const std::string& ca = "ca.pem",
                                          bool client_cert = false) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = certs.read(ca);
  if (client_cert) {
    o.pem_private_key = certs.read("client.key");
    o.pem_cert_chain = certs.read("client.pem");
  }
  return grpc::CreateChannel(address, grpc::SslCredentials(o));
}

grpc::Status Info(const std::shared_ptr<grpc::Channel>& channel, const std::string& key,
                  v1::ModelInfo* out = nullptr) {
  auto stub = v1::Engram::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(10));
  if (!key.empty()) ctx.AddMetadata("authorization", "Bearer " + key);
  v1::ModelInfo info;
  const grpc::Status st = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
  if (out) *out = info;
  return st;
}

TEST(Security, ApiKeysOnBothProtocolsWithoutTls) {
  DaemonOptions o;
  o.server_yaml = std::string("  api_keys: [\"") + kKey + "\"]\n";
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  auto channel = Connect((*d)->address());
  EXPECT_EQ(Info(channel, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  const grpc::Status wrong = Info(channel, "wrong-wrong-wrong-key");
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(wrong.error_message(), "missing or invalid API key");
  EXPECT_TRUE(Info(channel, kKey).ok());
  // A Generate without the key is refused before anything runs.
  {
    auto stub = v1::Engram::NewStub(channel);
    v1::GenerateRequest req;
    req.mutable_token_ids()->add_ids(1);
    req.set_max_tokens(2);
    EXPECT_EQ(Generate(*stub, req).status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::Status hs;
  EXPECT_EQ(HealthCheck(channel, &hs), Health::kServing) << hs.error_message();

  // The CLI sends the key from --api-key or ENGRAM_API_KEY.
  const std::string cli = std::string(ENGRAM_CLI) + " stats --server " + (*d)->address();
  EXPECT_NE(Shell(cli), 0);
  EXPECT_EQ(Shell(cli + " --api-key " + kKey), 0);
  EXPECT_EQ(Shell(std::string("ENGRAM_API_KEY=") + kKey + " " + cli), 0);

  // HTTP: 401 without or with a wrong key; /health needs none.
  const std::string url = "http://" + (*d)->http_address();
  const std::string code = "curl -s -o /dev/null -w '%{http_code}' ";
  EXPECT_EQ(Capture(code + url + "/v1/models"), "401");
  EXPECT_EQ(
      Capture(code + "-H 'Authorization: Bearer wrong-wrong-wrong-key' " + url + "/v1/models"),
      "401");
  EXPECT_EQ(Capture(code + "-H 'Authorization: Bearer " + kKey + "' " + url + "/v1/models"), "200");
  EXPECT_EQ(Capture(code + url + "/health"), "200");
  EXPECT_EQ(Capture(code + url + "/metrics"), "200");  // open unless metrics.require_auth
  EXPECT_EQ((*d)->Stop(), 0) << (*d)->StderrLog();
}

TEST(Security, TlsAndMutualTlsOnBothProtocols) {
  TestCerts certs;
  ASSERT_TRUE(certs.ok) << "openssl could not make the test certificates";
  DaemonOptions o;
  o.server_yaml = "  tls:\n    cert: \"" + certs.path("server.pem") + "\"\n    key: \"" +
                  certs.path("server.key") + "\"\n  api_keys: [\"" + kKey + "\"]\n";
  auto d = DaemonProcess::Start(o);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const std::string address = (*d)->address();
  v1::ModelInfo info;
  EXPECT_TRUE(Info(TlsChannel(address, certs), kKey, &info).ok());
  EXPECT_GT(info.vocab_size(), 0);
  EXPECT_EQ(Info(TlsChannel(address, certs), "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Info(Connect(address), kKey).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Info(TlsChannel(address, certs, "other-ca.pem"), kKey).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // The CLI over TLS.
  EXPECT_EQ(Shell(std::string(ENGRAM_CLI) + " stats --server " + address + " --tls-ca " +
                  certs.path("ca.pem") + " --api-key " + kKey),
            0);
  // HTTPS with curl and the OpenAI SDK.
  const std::string https = "https://" + (*d)->http_address();
  const std::string curl =
      "curl -s -o /dev/null -w '%{http_code}' --cacert " + certs.path("ca.pem");
  EXPECT_EQ(Capture(curl + " -H 'Authorization: Bearer " + std::string(kKey) + "' " + https +
                    "/v1/models"),
            "200");
  EXPECT_EQ(Capture(curl + " " + https + "/v1/models"), "401");
  EXPECT_EQ(
      Capture("curl -s -o /dev/null -w '%{http_code}' http://" + (*d)->http_address() + "/health"),
      "000");  // no plaintext on the TLS port
  int rc = 0;
  const std::string out = Capture("NODE_EXTRA_CA_CERTS=" + certs.path("ca.pem") +
                                      " ENGRAM_HTTP_URL=" + https + "/v1 ENGRAM_API_KEY=" + kKey +
                                      " ENGRAM_MODEL=synth:tiny node " ENGRAM_REPO
                                      "/tests/integration/openai_sdk_test.mjs 2>&1",
                                  &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ((*d)->Stop(), 0) << (*d)->StderrLog();

  // Mutual TLS: a client certificate signed by client_ca is required.
  DaemonOptions m;
  m.server_yaml = "  tls:\n    cert: \"" + certs.path("server.pem") + "\"\n    key: \"" +
                  certs.path("server.key") + "\"\n    client_ca: \"" + certs.path("ca.pem") +
                  "\"\n";
  auto md = DaemonProcess::Start(m);
  ASSERT_TRUE(md.ok()) << md.status().ToString();
  EXPECT_TRUE(Info(TlsChannel((*md)->address(), certs, "ca.pem", true), "").ok());
  EXPECT_EQ(Info(TlsChannel((*md)->address(), certs, "ca.pem", false), "").error_code(),
            grpc::StatusCode::UNAVAILABLE);
  const std::string mhttps = "https://" + (*md)->http_address() + "/v1/models";
  const std::string mcurl =
      "curl -s -o /dev/null -w '%{http_code}' --cacert " + certs.path("ca.pem") + " ";
  EXPECT_EQ(Capture(mcurl + "--cert " + certs.path("client.pem") + " --key " +
                    certs.path("client.key") + " " + mhttps),
            "200");
  const std::string anon = Capture(mcurl + mhttps);
  EXPECT_TRUE(anon == "000" || anon == "401") << anon;  // refused at the handshake or the door
  EXPECT_EQ((*md)->Stop(), 0) << (*md)->StderrLog();
}

TEST(Security, CheckConfigRefusesARemoteListenerWithoutTlsOrKeys) {
  testutil::TempDir dir;
  const std::string cfg = dir / "model.yaml";
  testutil::WriteFile(cfg,
                      "model: synth:tiny\nserver: {listen: \"0.0.0.0:0\"}\nhttp: {listen: "
                      "\"127.0.0.1:0\"}\n");
  int rc = 0;
  const std::string out = Capture(std::string(ENGRAMD) + " --check-config " + cfg + " 2>&1", &rc);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("server.listen"), std::string::npos) << out;
  EXPECT_NE(out.find("allow_insecure_remote"), std::string::npos) << out;
  testutil::WriteFile(cfg,
                      "model: synth:tiny\nserver: {listen: \"0.0.0.0:0\", "
                      "allow_insecure_remote: true}\nhttp: {listen: \"127.0.0.1:0\"}\n");
  EXPECT_EQ(Shell(std::string(ENGRAMD) + " --check-config " + cfg), 0);
  // A key file that is not there is found by --check-config, not by the first client.
  testutil::WriteFile(cfg, "model: synth:tiny\nserver: {api_key_file: \"" + dir / "missing" +
                               "\"}\nhttp: {listen: \"\"}\n");
  const std::string missing =
      Capture(std::string(ENGRAMD) + " --check-config " + cfg + " 2>&1", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(missing.find("server.api_key_file"), std::string::npos) << missing;
}

}  // namespace
}  // namespace engram::testing
