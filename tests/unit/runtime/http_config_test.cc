// model.yaml's `http` section: defaults, every key's bad values (an error naming the key and
// what was expected), clashes with the other listeners, the served model id, round trip.
#include <gtest/gtest.h>

#include <string>

#include "runtime/server_config.h"

namespace engram {
namespace {

ServerConfig Ok(const std::string& text) {
  auto c = ServerConfig::FromYaml(text, "model.yaml");
  EXPECT_TRUE(c.ok()) << text << " -> " << c.status().ToString();
  return c.ok() ? *c : ServerConfig{};
}

std::string Err(const std::string& text) {
  auto c = ServerConfig::FromYaml(text, "model.yaml");
  EXPECT_FALSE(c.ok()) << text << " was accepted";
  return c.ok() ? "" : c.status().message();
}

TEST(HttpConfig, Defaults) {
  const ServerConfig c = Ok("model: synth:tiny\n");
  EXPECT_EQ(c.http.listen, "127.0.0.1:8000");
  EXPECT_EQ(c.http.max_body_bytes, 8 << 20);
  EXPECT_EQ(c.http.idle_timeout_s, 30);
  EXPECT_EQ(c.http.max_connections, 512);
  EXPECT_EQ(c.http.model_name, "");
  EXPECT_EQ(Ok("model: synth:tiny\nhttp: {listen: \"\"}\n").http.listen, "");  // disabled
}

TEST(HttpConfig, BadValuesNameTheKey) {
  struct Case {
    const char* yaml;
    const char* key;
  } cases[] = {
      {"http: {listen: \"nohost\"}", "http.listen"},
      {"http: {listen: \"127.0.0.1:70000\"}", "http.listen"},
      {"http: {max_body_bytes: 10}", "http.max_body_bytes"},
      {"http: {max_body_bytes: \"big\"}", "http.max_body_bytes"},
      {"http: {idle_timeout_s: 0}", "http.idle_timeout_s"},
      {"http: {max_connections: 0}", "http.max_connections"},
      {"http: {model_name: [a]}", "http.model_name"},
      {"http: {port: 8000}", "http.port"},
      {"http: 5", "http"},
      {"server: {listen: \"127.0.0.1:9000\"}\nhttp: {listen: \"127.0.0.1:9000\"}", "http.listen"},
      {"metrics: {listen: \"127.0.0.1:9001\"}\nhttp: {listen: \"127.0.0.1:9001\"}", "http.listen"},
  };
  for (const Case& c : cases) {
    const std::string msg = Err(std::string("model: synth:tiny\n") + c.yaml + "\n");
    EXPECT_NE(msg.find(c.key), std::string::npos) << c.yaml << " -> " << msg;
  }
  // Port 0 everywhere is fine: each gets its own ephemeral port.
  Ok("model: synth:tiny\nserver: {listen: \"127.0.0.1:0\"}\nhttp: {listen: \"127.0.0.1:0\"}\n");
}

TEST(HttpConfig, ServedModelName) {
  EXPECT_EQ(Ok("model: synth:tiny\n").ServedModelName(), "synth:tiny");
  EXPECT_EQ(Ok("model: \"synth:small?seed=3\"\n").ServedModelName(), "synth:small");
  EXPECT_EQ(Ok("model: /models/Qwen3-8B/\n").ServedModelName(), "Qwen3-8B");
  EXPECT_EQ(Ok("model: /models/Qwen3-8B\nhttp: {model_name: qwen}\n").ServedModelName(), "qwen");
}

TEST(HttpConfig, RoundTripsThroughToYaml) {
  const ServerConfig c =
      Ok("model: synth:tiny\nhttp:\n  listen: \"[::1]:8080\"\n  max_body_bytes: 4096\n"
         "  idle_timeout_s: 5\n  max_connections: 7\n  model_name: demo\n");
  auto back = ServerConfig::FromYaml(c.ToYaml(), "again.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString() << "\n" << c.ToYaml();
  EXPECT_EQ(back->http, c.http);
}

}  // namespace
}  // namespace engram
