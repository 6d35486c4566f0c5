// Security configuration and its pieces: server.tls / api_keys / api_key_file /
// allow_insecure_remote / metrics.require_auth parsed strictly (errors name the key, never a
// key's value); the insecure-remote rule; ApiKeys (header forms, wrong and missing keys, the
// key file with line numbers); LoadTlsFiles against certificates made by openssl (good pair,
// key of another certificate, garbage, missing file, a CA for client certificates).
#include <gtest/gtest.h>

#include <string>

#include "../../support/temp_dir.h"
#include "../../support/test_certs.h"
#include "common/host_port.h"
#include "runtime/api_keys.h"
#include "runtime/server_config.h"
#include "runtime/tls_files.h"

namespace engram {
namespace {

constexpr const char* kKey = "k3y-0123456789abcdef";
constexpr const char* kKey2 = "another-key-0123456789";

Result<ServerConfig> Parse(const std::string& body, const std::string& source = "model.yaml") {
  return ServerConfig::FromYaml("model: synth:tiny\n" + body, source);
}

std::string Err(const std::string& body) {
  auto c = Parse(body);
  EXPECT_FALSE(c.ok()) << body << " was accepted";
  return c.ok() ? "" : c.status().message();
}

TEST(SecurityConfig, KeysAndTlsParse) {
  auto c = Parse(std::string("server:\n  api_keys: [\"") + kKey + "\", \"" + kKey2 +
                     "\"]\n  api_key_file: keys.txt\n  tls: {cert: s.pem, key: s.key, "
                     "client_ca: ca.pem}\nmetrics: {require_auth: true}\n",
                 "/etc/engramd/model.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->server.api_keys.size(), 2u);
  EXPECT_EQ(c->server.api_key_file, "/etc/engramd/keys.txt");  // resolved
  EXPECT_EQ(c->server.tls.cert, "/etc/engramd/s.pem");
  EXPECT_EQ(c->server.tls.key, "/etc/engramd/s.key");
  EXPECT_EQ(c->server.tls.client_ca, "/etc/engramd/ca.pem");
  EXPECT_TRUE(c->metrics.require_auth);
  // The effective config never shows a key.
  const std::string yaml = c->ToYaml();
  EXPECT_EQ(yaml.find(kKey), std::string::npos) << yaml;
  EXPECT_EQ(yaml.find(kKey2), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("2 key(s), not shown"), std::string::npos) << yaml;
  auto back = ServerConfig::FromYaml(yaml, "/etc/engramd/again.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << yaml;
  EXPECT_EQ(back->server.tls, c->server.tls);
  EXPECT_EQ(back->server.api_key_file, c->server.api_key_file);
}

TEST(SecurityConfig, BadValuesNameTheKeyAndNeverEchoAKey) {
  struct Case {
    std::string body;
    const char* expect;
  } cases[] = {
      {"server: {api_keys: \"" + std::string(kKey) + "\"}\n", "server.api_keys: expected a list"},
      {"server: {api_keys: [short]}\n", "server.api_keys[0]"},
      {"server: {api_keys: [\"has a space in it!!\"]}\n", "server.api_keys[0]"},
      {"server: {api_keys: [\"" + std::string(kKey) + "\", \"" + kKey + "\"]}\n", "twice"},
      {"server: {api_keys: [[x]]}\n", "server.api_keys[0]"},
      {"server: {api_key_file: \"\"}\n", "server.api_key_file"},
      {"server: {tls: {cert: a.pem}}\n", "cert and key go together"},
      {"server: {tls: {key: a.key}}\n", "cert and key go together"},
      {"server: {tls: {client_ca: ca.pem}}\n", "client_ca needs"},
      {"server: {tls: {certificate: a.pem}}\n", "server.tls.certificate"},
      {"server: {tls: yes}\n", "server.tls"},
      {"server: {allow_insecure_remote: maybe}\n", "server.allow_insecure_remote"},
      {"metrics: {require_auth: 1}\n", "metrics.require_auth"},
  };
  for (const Case& c : cases) {
    const std::string msg = Err(c.body);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.body << " -> " << msg;
    EXPECT_EQ(msg.find(kKey), std::string::npos) << "the key leaked into: " << msg;
  }
}

TEST(SecurityConfig, RemoteListenersNeedTlsOrKeysOrAnExplicitOptOut) {
  for (const char* listen : {"0.0.0.0:50051", "[::]:1", "10.1.2.3:9", "my-host:50051"}) {
    const std::string msg = Err(std::string("server: {listen: \"") + listen + "\"}\n");
    EXPECT_NE(msg.find("server.listen"), std::string::npos) << msg;
    EXPECT_NE(msg.find("allow_insecure_remote"), std::string::npos) << msg;
  }
  EXPECT_NE(Err("http: {listen: \"0.0.0.0:8000\"}\n").find("http.listen"), std::string::npos);
  for (const char* ok_body :
       {"server: {listen: \"127.0.0.1:1\"}\nhttp: {listen: \"[::1]:2\"}\n",
        "server: {listen: \"localhost:1\"}\nhttp: {listen: \"127.8.9.10:2\"}\n",
        "server: {listen: \"0.0.0.0:1\", allow_insecure_remote: true}\n",
        "server: {listen: \"0.0.0.0:1\", api_key_file: keys}\n",
        "server: {listen: \"0.0.0.0:1\", tls: {cert: c.pem, key: c.key}}\n"}) {
    auto c = Parse(ok_body);
    EXPECT_TRUE(c.ok()) << ok_body << " -> " << c.status().ToString();
  }
  EXPECT_TRUE(IsLoopbackListen("127.0.0.1:0"));
  EXPECT_TRUE(IsLoopbackListen("[::1]:0"));
  EXPECT_FALSE(IsLoopbackListen("[::]:0"));
  EXPECT_FALSE(IsLoopbackListen("128.0.0.1:0"));
}

TEST(ApiKeys, HeaderFormsAndWrongKeys) {
  auto keys = ApiKeys::FromKeys({kKey, kKey2});
  ASSERT_TRUE(keys.ok());
  EXPECT_TRUE(keys->enabled());
  EXPECT_TRUE(keys->Check(std::string("Bearer ") + kKey));
  EXPECT_TRUE(keys->Check(std::string("bearer ") + kKey2));
  EXPECT_TRUE(keys->Check(std::string("BEARER  ") + kKey + " "));
  for (const std::string& bad :
       {std::string(), std::string(kKey), std::string("Basic ") + kKey, std::string("Bearer"),
        std::string("Bearer "), std::string("Bearer ") + kKey + "x",
        std::string("Bearer ") + std::string(kKey).substr(1), std::string("Bearer wrong")}) {
    EXPECT_FALSE(keys->Check(bad)) << bad;
  }
  EXPECT_TRUE(ApiKeys().Check(""));  // no keys configured: open
  EXPECT_FALSE(ApiKeys().enabled());
  EXPECT_FALSE(ApiKeys::FromKeys({"tiny"}).ok());
}

TEST(ApiKeys, KeyFileLinesAndErrors) {
  testutil::TempDir dir;
  const std::string file = dir / "keys";
  testutil::WriteFile(file, std::string("# engramd keys\n\n  ") + kKey + "  \n" + kKey2 + "\n");
  auto c =
      Parse("server: {api_key_file: \"" + file + "\", api_keys: [\"third-key-0123456789\"]}\n");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto keys = ApiKeys::Load(*c);
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_TRUE(keys->Check(std::string("Bearer ") + kKey));
  EXPECT_TRUE(keys->Check("Bearer third-key-0123456789"));

  testutil::WriteFile(file, std::string(kKey) + "\nnot a key\n");
  auto bad = ApiKeys::Load(*c);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(file + ": line 2"), std::string::npos)
      << bad.status().message();
  EXPECT_EQ(bad.status().message().find("not a key"), std::string::npos);  // never echoed
  testutil::WriteFile(file, "# only comments\n\n");
  auto empty = ApiKeys::Load(*c);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("no key in it"), std::string::npos);
  auto missing = Parse("server: {api_key_file: \"" + dir / "nope" + "\"}\n");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(ApiKeys::Load(*missing).status().code(), StatusCode::kNotFound);
  // --check-config finds it too.
  EXPECT_EQ(missing->CheckEnvironment().code(), StatusCode::kNotFound);
}

TEST(TlsFiles, LoadsAMatchingPairAndRefusesTheRest) {
  testing::TestCerts certs;
  ASSERT_TRUE(certs.ok) << "openssl could not make the test certificates";
  auto with = [&](const std::string& cert, const std::string& key, const std::string& ca = "") {
    std::string body = "server:\n  tls:\n    cert: \"" + cert + "\"\n    key: \"" + key + "\"\n";
    if (!ca.empty()) body += "    client_ca: \"" + ca + "\"\n";
    auto c = Parse(body);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return LoadTlsFiles(*c);
  };
  auto good = with(certs.path("server.pem"), certs.path("server.key"), certs.path("ca.pem"));
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  ASSERT_TRUE(good->has_value());
  EXPECT_NE((*good)->cert_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  EXPECT_NE((*good)->client_ca_pem.find("BEGIN CERTIFICATE"), std::string::npos);

  auto mismatch = with(certs.path("server.pem"), certs.path("client.key"));
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("does not fit server.tls.cert"), std::string::npos)
      << mismatch.status().message();
  testutil::WriteFile(certs.path("garbage.pem"), "hello\n");
  auto garbage = with(certs.path("garbage.pem"), certs.path("server.key"));
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("server.tls.cert"), std::string::npos);
  EXPECT_NE(garbage.status().message().find("not a PEM certificate"), std::string::npos);
  auto bad_key = with(certs.path("server.pem"), certs.path("garbage.pem"));
  ASSERT_FALSE(bad_key.ok());
  EXPECT_NE(bad_key.status().message().find("server.tls.key"), std::string::npos);
  auto bad_ca = with(certs.path("server.pem"), certs.path("server.key"), certs.path("garbage.pem"));
  ASSERT_FALSE(bad_ca.ok());
  EXPECT_NE(bad_ca.status().message().find("server.tls.client_ca"), std::string::npos);
  auto missing = with(certs.path("none.pem"), certs.path("server.key"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  auto plain = Parse("");
  ASSERT_TRUE(plain.ok());
  auto none = LoadTlsFiles(*plain);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

}  // namespace
}  // namespace engram
