// Fuzzes model.yaml parsing (ServerConfig::FromYaml: yaml-cpp, then every key checked). The
// source is an absolute path in a directory that does not exist, so relative paths resolve
// the same way for every input. A config that parses must round-trip: ToYaml -> FromYaml gives
// an equal config but for server.api_keys, which ToYaml never prints (server_config.h); its engine
// and serving options are built too. Nothing is opened: CheckEnvironment and OpenModelFiles are not
// called.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "runtime/server_config.h"

namespace {

constexpr const char kSource[] = "/nonexistent-engram-fuzz/model.yaml";

// The parts of two configs that differ, for the failure message.
std::string Differences(const engram::ServerConfig& a, const engram::ServerConfig& b) {
  std::string out;
  const auto note = [&out](bool same, const char* part) {
    if (!same) out += std::string(out.empty() ? "" : ", ") + part;
  };
  note(a.model == b.model, "model");
  note(a.tokenizer == b.tokenizer, "tokenizer");
  note(a.add_bos == b.add_bos, "add_bos");
  note(a.backend == b.backend, "backend");
  note(a.server == b.server, "server");
  note(a.limits == b.limits, "limits");
  note(a.tables == b.tables, "tables");
  note(a.logging == b.logging, "logging");
  note(a.metrics == b.metrics, "metrics");
  note(a.http == b.http, "http");
  note(a.chat_template == b.chat_template, "chat_template");
  if (a.model != b.model) out += "; model \"" + a.model + "\" became \"" + b.model + "\"";
  if (a.tokenizer != b.tokenizer) {
    out += "; tokenizer \"" + a.tokenizer + "\" became \"" + b.tokenizer + "\"";
  }
  return out.empty() ? "a part outside the sections compared here" : out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engram::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = engram::ServerConfig::FromYaml(text, kSource);
  engram::fuzz::Note("FromYaml", config.status());
  if (!config.ok()) return 0;
  const std::string yaml = config->ToYaml();
  auto again = engram::ServerConfig::FromYaml(yaml, kSource);
  if (!again.ok()) {
    engram::fuzz::Fail("ToYaml of a parsed config does not parse: " + again.status().ToString() +
                       "\n" + yaml);
  }
  // ToYaml never prints API keys (their count only, as a comment): everything else returns.
  engram::ServerConfig expected = *config;
  expected.server.api_keys.clear();
  if (!(*again == expected)) {
    engram::fuzz::Fail("config changes on a round trip (" + Differences(expected, *again) +
                       "); ToYaml:\n" + yaml + "\nthen:\n" + again->ToYaml());
  }
  (void)config->ModelSpec();
  (void)config->ToEngineOptions();
  (void)config->ToServingOptions();
  return 0;
}
