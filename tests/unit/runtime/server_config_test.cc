// ServerConfig: defaults, every refusal with its exact message, path resolution, the
// ToYaml -> FromYaml round trip and the example configs of the repository.
#include "runtime/server_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "model/synth.h"

namespace engram {
namespace {

namespace fs = std::filesystem;

const fs::path kConfigsDir = fs::path(ENGRAM_TEST_DATA) / ".." / ".." / "configs";

// A default config serving `model`.
ServerConfig WithModel(const std::string& model) {
  ServerConfig c;
  c.model = model;
  return c;
}

// The error of FromYaml(text, source); fails the test when parsing succeeds.
Status ParseError(const std::string& text, const std::string& source = "model.yaml") {
  auto c = ServerConfig::FromYaml(text, source);
  EXPECT_FALSE(c.ok()) << "accepted:\n" << text;
  return c.status();
}

std::string ErrorMessage(const std::string& text, const std::string& source = "model.yaml") {
  const Status st = ParseError(text, source);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  return st.message();
}

TEST(ServerConfig, DefaultsWithOnlyModel) {
  auto c = ServerConfig::FromYaml("model: synth:tiny\n", "model.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model, "synth:tiny");
  EXPECT_EQ(c->tokenizer, "");
  EXPECT_FALSE(c->add_bos.has_value());
  EXPECT_EQ(c->backend.kind, "cpu");
  EXPECT_EQ(c->backend.threads, 0);
  EXPECT_EQ(c->backend.device, 0);
  EXPECT_EQ(c->server.listen, "127.0.0.1:50051");
  EXPECT_EQ(c->server.max_message_bytes, 4 * 1024 * 1024);
  EXPECT_EQ(c->server.drain_grace_s, 10.0);
  EXPECT_EQ(c->server.handler_threads, 0);
  EXPECT_EQ(c->limits.max_running_seqs, 64);
  EXPECT_EQ(c->limits.max_batch_tokens, 2048);
  EXPECT_EQ(c->limits.prefill_chunk_tokens, 512);
  EXPECT_EQ(c->limits.max_waiting, 256);
  EXPECT_EQ(c->limits.max_tokens_default, 256);
  EXPECT_EQ(c->limits.kv_tokens, 65536);
  EXPECT_EQ(c->limits.kv_block_size, 16);
  EXPECT_EQ(c->logging.level, "info");
  EXPECT_EQ(c->metrics.listen, "");
  EXPECT_EQ(*c, WithModel("synth:tiny"));
}

TEST(ServerConfig, EmptySectionsKeepDefaults) {
  auto c = ServerConfig::FromYaml("model: synth:tiny\nbackend:\nlimits: {}\n", "model.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(*c, WithModel("synth:tiny"));
}

TEST(ServerConfig, ToEngineOptions) {
  auto c = ServerConfig::FromYaml(
      "model: synth:tiny\nbackend: {kind: cuda, threads: 3, device: 2, cuda_graphs: true}\n"
      "limits: {max_running_seqs: 9, kv_tokens: 1000, kv_block_size: 32}\n",
      "model.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const EngineOptions o = c->ToEngineOptions();
  EXPECT_EQ(o.backend.kind, "cuda");
  EXPECT_EQ(o.backend.threads, 3);
  EXPECT_EQ(o.backend.device_index, 2);
  EXPECT_TRUE(o.backend.cuda_graphs);
  EXPECT_FALSE(WithModel("synth:tiny").ToEngineOptions().backend.cuda_graphs);  // off by default
  EXPECT_EQ(o.max_seqs, 9);
  EXPECT_EQ(o.kv_tokens, 1000);
  EXPECT_EQ(o.block_size, 32);
}

TEST(ServerConfig, TablesToEngineOptions) {
  auto c = ServerConfig::FromYaml(
      "model: synth:tiny\ntables: {tier: dram, transfer: zero_copy, pin: \"on\", "
      "hot_cache_bytes: 4096, verify_checksums: false, nvme_merge_bytes: 0}\n",
      "model.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const EngineOptions o = c->ToEngineOptions();
  EXPECT_EQ(o.tables.tier, "dram");
  EXPECT_EQ(o.tables.transfer, "zero_copy");
  EXPECT_EQ(o.tables.pin, "on");
  EXPECT_EQ(o.tables.hot_cache_bytes, 4096u);
  EXPECT_FALSE(o.tables.verify_checksums);
  EXPECT_EQ(o.tables.nvme_merge_bytes, 0u);
  const ServerConfig d = WithModel("synth:tiny");
  EXPECT_EQ(d.tables.transfer, "copy");
  EXPECT_EQ(d.tables.pin, "auto");
  EXPECT_EQ(d.tables.hot_cache_bytes, 0);
  EXPECT_TRUE(d.tables.verify_checksums);
  EXPECT_EQ(d.ToEngineOptions().tables.nvme_merge_bytes, 128u << 10);
}

TEST(ServerConfig, RefusesBadTableTransferAndPin) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\ntables: {tier: dram, transfer: rdma}\n"),
            "model.yaml: tables.transfer: \"rdma\" (expected one of: copy, zero_copy)");
  EXPECT_EQ(ErrorMessage("model: synth:tiny\ntables: {tier: dram, pin: always}\n"),
            "model.yaml: tables.pin: \"always\" (expected one of: auto, on, off)");
  EXPECT_EQ(ErrorMessage("model: synth:tiny\ntables: {tier: nvme, transfer: zero_copy}\n"),
            "model.yaml: tables.transfer: zero_copy reads the tables in place from host memory "
            "and needs tables.tier dram (tier is nvme)");
  EXPECT_EQ(
      ErrorMessage("model: synth:tiny\ntables: {hot_cache_bytes: -1}\n"),
      "model.yaml: tables.hot_cache_bytes: -1 is out of range (expected 0..1125899906842624)");
  EXPECT_EQ(ErrorMessage("model: synth:tiny\ntables: {tier: nvme, nvme_merge_bytes: 2097152}\n"),
            "model.yaml: tables.nvme_merge_bytes: 2097152 is out of range (expected 0..1048576)");
}

TEST(ServerConfig, RefusesOutOfRange) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits:\n  max_running_seqs: 0\n", "cpu-demo.yaml"),
            "cpu-demo.yaml: limits.max_running_seqs: 0 is out of range (expected 1..4096)");
}

TEST(ServerConfig, RefusesIntegerBeyondInt64) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits: {kv_tokens: 99999999999999999999}\n"),
            "model.yaml: limits.kv_tokens: 99999999999999999999 is out of range (expected "
            "16..1073741824)");
}

TEST(ServerConfig, RefusesUnknownNestedKey) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nbackend:\n  kindd: cpu\n", "cpu-demo.yaml"),
            "cpu-demo.yaml: unknown key \"backend.kindd\" (allowed: kind, threads, device, "
            "cuda_graphs, weights)");
}

TEST(ServerConfig, RefusesUnknownTopLevelKey) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nengram: {}\n"),
            "model.yaml: unknown key \"engram\" (allowed: model, tokenizer, add_bos, backend, "
            "server, limits, tables, logging, metrics, http, chat_template)");
}

TEST(ServerConfig, RefusesDuplicateKey) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits:\n  kv_tokens: 64\n  kv_tokens: 128\n"),
            "model.yaml: duplicate key \"limits.kv_tokens\"");
}

TEST(ServerConfig, RefusesBadEnum) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nbackend:\n  kind: tpu\n"),
            "model.yaml: backend.kind: \"tpu\" (expected one of: cpu, cuda)");
}

TEST(ServerConfig, BackendWeights) {
  EXPECT_EQ(WithModel("synth:tiny").backend.weights, "auto");  // the default: as the files
  EXPECT_EQ(WithModel("synth:tiny").ToEngineOptions().backend.weights, "auto");
  auto c = ServerConfig::FromYaml("model: synth:tiny\nbackend: {weights: int8}\n", "model.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->backend.weights, "int8");
  EXPECT_EQ(c->ToEngineOptions().backend.weights, "int8");
  auto b = ServerConfig::FromYaml(c->ToYaml(), "effective.yaml");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(*b, *c);
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nbackend:\n  weights: fp4\n"),
            "model.yaml: backend.weights: \"fp4\" (expected one of: auto, bf16, int8)");
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nbackend:\n  weights: INT8\n"),
            "model.yaml: backend.weights: \"INT8\" (expected one of: auto, bf16, int8)");
}

TEST(ServerConfig, RefusesBadLogLevel) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlogging: {level: verbose}\n"),
            "model.yaml: logging.level: \"verbose\" (expected one of: trace, debug, info, warn, "
            "error, critical, off)");
}

TEST(ServerConfig, RefusesNonInteger) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits:\n  kv_tokens: many\n"),
            "model.yaml: limits.kv_tokens: \"many\" is not an integer");
}

TEST(ServerConfig, RefusesQuotedInteger) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits:\n  kv_tokens: \"4096\"\n"),
            "model.yaml: limits.kv_tokens: \"4096\" is not an integer");
}

TEST(ServerConfig, RefusesFractionalInteger) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nbackend: {threads: 1.5}\n"),
            "model.yaml: backend.threads: \"1.5\" is not an integer");
}

TEST(ServerConfig, RefusesNonNumber) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nserver: {drain_grace_s: 10s}\n"),
            "model.yaml: server.drain_grace_s: \"10s\" is not a number");
}

TEST(ServerConfig, RefusesNonBoolean) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nadd_bos: yes\n"),
            "model.yaml: add_bos: \"yes\" is not a boolean (expected true or false)");
}

TEST(ServerConfig, RefusesMapWhereScalarExpected) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits:\n  kv_tokens: [1, 2]\n"),
            "model.yaml: limits.kv_tokens: expected an integer, found a sequence");
}

TEST(ServerConfig, RefusesEmptyValue) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits:\n  kv_tokens:\n"),
            "model.yaml: limits.kv_tokens: expected an integer, found no value");
}

TEST(ServerConfig, RefusesScalarSection) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nbackend: cpu\n"),
            "model.yaml: backend: expected a map, found a scalar");
}

TEST(ServerConfig, RefusesNonMapDocument) {
  EXPECT_EQ(ErrorMessage("- model\n- synth:tiny\n"),
            "model.yaml: expected a map of keys at the top level, found a sequence");
}

TEST(ServerConfig, RefusesMissingModel) {
  EXPECT_EQ(ErrorMessage("backend:\n  kind: cpu\n"),
            "model.yaml: missing required key \"model\" (a model directory or synth:PRESET)");
}

TEST(ServerConfig, RefusesEmptyDocument) {
  EXPECT_EQ(ErrorMessage("# nothing here\n"),
            "model.yaml: missing required key \"model\" (a model directory or synth:PRESET)");
}

TEST(ServerConfig, RefusesEmptyModel) {
  EXPECT_EQ(ErrorMessage("model: \"\"\n"),
            "model.yaml: model: \"\" is empty (expected a model directory or synth:PRESET)");
}

TEST(ServerConfig, RefusesUnknownSynthPreset) {
  EXPECT_EQ(ErrorMessage("model: synth:huge\n"),
            "model.yaml: model: unknown synth preset \"huge\" (expected one of: tiny, "
            "tiny-qwen2, small, dense-4b, dense-8b, tiny-v41, small-v41, dense-8b-v41)");
}

TEST(ServerConfig, RefusesTokenizerTwice) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny?tokenizer=a.json\ntokenizer: b.json\n"),
            "model.yaml: tokenizer: set both as a key and as the tokenizer= parameter of model "
            "(use one)");
}

TEST(ServerConfig, RefusesYamlSyntaxErrorWithLineAndColumn) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nbackend:\n  kind: cpu\n threads: 2\n"),
            "model.yaml: YAML syntax error at line 4, column 2: end of map not found");
}

TEST(ServerConfig, RefusesUnclosedFlowMapWithLineAndColumn) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits: {kv_tokens: 64\n"),
            "model.yaml: YAML syntax error at line 3, column 1: end of map flow not found");
}

TEST(ServerConfig, RefusesSeveralDocuments) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\n---\nmodel: synth:small\n"),
            "model.yaml: holds 2 YAML documents (expected one)");
}

TEST(ServerConfig, RefusesMissingFile) {
  const std::string path = (fs::temp_directory_path() / "engramd-no-such-dir/model.yaml").string();
  auto c = ServerConfig::LoadFile(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c.status().message(),
            "config file " + path + ": cannot open: No such file or directory");
}

TEST(ServerConfig, RefusesBadListenAddress) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nserver: {listen: localhost}\n"),
            "model.yaml: server.listen: \"localhost\" is not host:port (e.g. 127.0.0.1:50051, "
            "[::1]:50051, 0.0.0.0:0)");
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nserver: {listen: \"::1:50051\"}\n"),
            "model.yaml: server.listen: \"::1:50051\" is not host:port (e.g. 127.0.0.1:50051, "
            "[::1]:50051, 0.0.0.0:0)");
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nmetrics: {listen: \"host:\"}\n"),
            "model.yaml: metrics.listen: \"host:\" is not host:port (e.g. 127.0.0.1:50051, "
            "[::1]:50051, 0.0.0.0:0) or \"\" (disabled)");
}

TEST(ServerConfig, RefusesListenPortOutOfRange) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nserver: {listen: \"127.0.0.1:70000\"}\n"),
            "model.yaml: server.listen: port 70000 is out of range (expected 0..65535)");
}

TEST(ServerConfig, AcceptsListenForms) {
  for (const char* listen : {"0.0.0.0:0", "[::1]:50051", "[::]:8080", "my-host.local:1"}) {
    auto c = ServerConfig::FromYaml(
        fmt::format("model: synth:tiny\nserver: {{listen: \"{}\", allow_insecure_remote: true}}\n",
                    listen),
        "model.yaml");
    ASSERT_TRUE(c.ok()) << listen << ": " << c.status().ToString();
    EXPECT_EQ(c->server.listen, listen);
  }
}

TEST(ServerConfig, RefusesMetricsOnServerAddress) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nmetrics: {listen: \"127.0.0.1:50051\"}\n"),
            "model.yaml: metrics.listen: \"127.0.0.1:50051\" is also server.listen (expected "
            "another port)");
}

TEST(ServerConfig, RefusesBlockSizeNotPowerOfTwo) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits: {kv_block_size: 24}\n"),
            "model.yaml: limits.kv_block_size: 24 is not a power of two (expected 1, 2, 4, ..., "
            "256)");
}

TEST(ServerConfig, RefusesPrefillChunkAboveBatch) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\nlimits: {max_batch_tokens: 256, "
                         "prefill_chunk_tokens: 512}\n"),
            "model.yaml: limits.prefill_chunk_tokens: 512 exceeds limits.max_batch_tokens (256)");
}

TEST(ServerConfig, RefusesMaxTokensAboveKvCapacity) {
  EXPECT_EQ(
      ErrorMessage("model: synth:tiny\nlimits: {kv_tokens: 1024, max_tokens_default: 2048}\n"),
      "model.yaml: limits.max_tokens_default: 2048 exceeds limits.kv_tokens (1024)");
}

// Every key set to a non-default value.
constexpr const char* kFullConfig = R"(model: /srv/models/engram-8b
tokenizer: /srv/tokenizers/tokenizer.json
add_bos: false
backend:
  kind: cuda
  threads: 12
  device: 1
  cuda_graphs: true
server:
  listen: "[::]:6000"
  allow_insecure_remote: true
  max_message_bytes: 1048576
  drain_grace_s: 2.5
  handler_threads: 8
limits:
  max_running_seqs: 32
  max_batch_tokens: 4096
  prefill_chunk_tokens: 1024
  max_waiting: 1
  max_tokens_default: 100
  kv_tokens: 32768
  kv_block_size: 32
tables:
  tier: dram
  prefetch: false
  dram_budget_bytes: 1099511627776
  cache_bytes: 1048576
  cache_policy: lru
  transfer: zero_copy
  pin: "on"
  numa: bind
  numa_node: 1
  hot_cache_bytes: 65536
  verify_checksums: false
logging:
  level: debug
metrics:
  listen: 127.0.0.1:9464
)";

TEST(ServerConfig, FullFileRoundTripsThroughToYaml) {
  auto a = ServerConfig::FromYaml(kFullConfig, "model.yaml");
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->add_bos, std::optional<bool>(false));
  EXPECT_EQ(a->server.drain_grace_s, 2.5);
  EXPECT_EQ(a->limits.max_waiting, 1);
  EXPECT_TRUE(a->backend.cuda_graphs);
  const std::string yaml = a->ToYaml();
  auto b = ServerConfig::FromYaml(yaml, "effective.yaml");
  ASSERT_TRUE(b.ok()) << b.status().ToString() << "\n" << yaml;
  EXPECT_EQ(*a, *b) << yaml;
  EXPECT_EQ(b->ToYaml(), yaml);
}

TEST(ServerConfig, DefaultsRoundTripThroughToYaml) {
  const ServerConfig a = WithModel("synth:tiny?seed=3");
  const std::string yaml = a.ToYaml();
  auto b = ServerConfig::FromYaml(yaml, "effective.yaml");
  ASSERT_TRUE(b.ok()) << b.status().ToString() << "\n" << yaml;
  EXPECT_EQ(*b, a) << yaml;
  // The effective config names every key, defaults included.
  for (const char* key : {"kind:", "threads:", "listen:", "max_message_bytes:", "drain_grace_s:",
                          "handler_threads:", "max_running_seqs:", "kv_block_size:", "level:"}) {
    EXPECT_NE(yaml.find(key), std::string::npos) << key << " missing in\n" << yaml;
  }
}

TEST(ServerConfig, ResolvesRelativePathsAgainstTheConfigDirectory) {
  auto c = ServerConfig::FromYaml("model: ../models/demo\ntokenizer: tok/tokenizer.json\n",
                                  "/etc/engramd/model.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model, "/etc/models/demo");
  EXPECT_EQ(c->tokenizer, "/etc/engramd/tok/tokenizer.json");
  EXPECT_EQ(c->ModelSpec(), "/etc/models/demo");

  auto abs = ServerConfig::FromYaml("model: /srv/m\n", "/etc/engramd/model.yaml");
  ASSERT_TRUE(abs.ok());
  EXPECT_EQ(abs->model, "/srv/m");

  // A source without a directory part leaves relative paths as they are.
  auto bare = ServerConfig::FromYaml("model: models/demo\n", "model.yaml");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->model, "models/demo");
}

TEST(ServerConfig, ResolvesSynthTokenizerPaths) {
  auto param = ServerConfig::FromYaml("model: synth:tiny?seed=1&tokenizer=tok.json&dtype=f32\n",
                                      "/etc/engramd/model.yaml");
  ASSERT_TRUE(param.ok()) << param.status().ToString();
  EXPECT_EQ(param->model, "synth:tiny?seed=1&tokenizer=/etc/engramd/tok.json&dtype=f32");
  EXPECT_EQ(param->ModelSpec(), param->model);

  auto key = ServerConfig::FromYaml("model: synth:tiny?seed=1\ntokenizer: ../tok.json\n",
                                    "/etc/engramd/model.yaml");
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ(key->model, "synth:tiny?seed=1");
  EXPECT_EQ(key->tokenizer, "/etc/tok.json");
  EXPECT_EQ(key->ModelSpec(), "synth:tiny?seed=1&tokenizer=/etc/tok.json");

  auto plain = ServerConfig::FromYaml("model: synth:tiny\ntokenizer: /t.json\n", "m.yaml");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->ModelSpec(), "synth:tiny?tokenizer=/t.json");
}

TEST(ServerConfig, LoadFileResolvesAgainstItsDirectory) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("engramd-cfg-{}", ::getpid());
  fs::create_directories(dir / "etc");
  const fs::path file = dir / "etc" / "model.yaml";
  std::ofstream(file) << "model: ../models/demo\nlimits:\n  max_waiting: 3\n";
  auto c = ServerConfig::LoadFile(file.string());
  fs::remove_all(dir);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->model, (dir / "models" / "demo").lexically_normal().string());
  EXPECT_EQ(c->limits.max_waiting, 3);
}

TEST(ServerConfig, LoadFileNamesThePathInErrors) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("engramd-cfg-err-{}", ::getpid());
  fs::create_directories(dir);
  const fs::path file = dir / "cpu-demo.yaml";
  std::ofstream(file) << "model: synth:tiny\nlimits:\n  max_running_seqs: 0\n";
  auto c = ServerConfig::LoadFile(file.string());
  fs::remove_all(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            file.string() + ": limits.max_running_seqs: 0 is out of range (expected 1..4096)");
}

TEST(ServerConfig, RepositoryConfigsParse) {
  ASSERT_TRUE(fs::is_directory(kConfigsDir)) << kConfigsDir;
  int count = 0;
  for (const auto& entry : fs::directory_iterator(kConfigsDir)) {
    if (entry.path().extension() != ".yaml") continue;
    ++count;
    auto c = ServerConfig::LoadFile(entry.path().string());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    auto again = ServerConfig::FromYaml(c->ToYaml(), "effective.yaml");
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(*again, *c) << entry.path();
  }
  EXPECT_GE(count, 2);
}

TEST(ServerConfig, CpuDemoConfig) {
  auto c = ServerConfig::LoadFile((kConfigsDir / "cpu-demo.yaml").string());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->backend.kind, "cpu");
  EXPECT_EQ(c->server.listen, "127.0.0.1:50051");
  EXPECT_EQ(c->model, "synth:tiny");
  const fs::path repo = fs::absolute(kConfigsDir / "..").lexically_normal();
  EXPECT_EQ(c->tokenizer, (repo / "tests/fixtures/tokenizer/node_modules/@lenml/"
                                  "tokenizer-deepseek_v3/models/tokenizer.json")
                              .string());
  EXPECT_EQ(c->ModelSpec(), "synth:tiny?tokenizer=" + c->tokenizer);
}

TEST(ServerConfig, OpenModelFilesOfTheCpuDemo) {
  auto c = ServerConfig::LoadFile((kConfigsDir / "cpu-demo.yaml").string());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  if (!fs::exists(c->tokenizer)) GTEST_SKIP() << "npm fixture missing: " << c->tokenizer;
  auto files = c->OpenModelFiles();
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_EQ(files->tokenizer_path, c->tokenizer);
  EXPECT_GE(files->config.vocab_size, 128000);  // DeepSeek-V3's vocabulary, not the preset's
}

TEST(ServerConfig, OpenModelFilesOfASynthSpec) {
  auto c = ServerConfig::FromYaml("model: synth:tiny\n", "model.yaml");
  ASSERT_TRUE(c.ok());
  auto files = c->OpenModelFiles();
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_EQ(files->config.vocab_size, 512);
  EXPECT_EQ(files->tokenizer_path, "");
}

TEST(ServerConfig, OpenModelFilesOverridesADirectorysTokenizer) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("engramd-cfg-model-{}", ::getpid());
  SynthOptions synth;
  synth.progress = false;
  ASSERT_TRUE(WriteSynthModel(synth, (dir / "model").string()).ok());
  std::ofstream(dir / "tokenizer.json") << "{}";
  std::ofstream(dir / "a.yaml") << "model: model\ntokenizer: tokenizer.json\n";
  std::ofstream(dir / "b.yaml") << "model: model\ntokenizer: missing.json\n";
  auto a = ServerConfig::LoadFile((dir / "a.yaml").string());
  auto b = ServerConfig::LoadFile((dir / "b.yaml").string());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  auto files = a->OpenModelFiles();
  auto missing = b->OpenModelFiles();
  fs::remove_all(dir);
  ASSERT_TRUE(files.ok()) << files.status().ToString();
  EXPECT_EQ(files->tokenizer_path, (dir / "tokenizer.json").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "tokenizer: " + (dir / "missing.json").string() + ": no such file");
}

}  // namespace
}  // namespace engram

namespace engram {
namespace {

TEST(ServerConfig, TablesSectionParsesAndReachesEngineOptions) {
  auto c = ServerConfig::FromYaml(
      "model: synth:tiny\ntables:\n  tier: nvme\n  prefetch: false\n  cache_bytes: 1048576\n"
      "  cache_policy: lru\n",
      "model.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const EngineOptions o = c->ToEngineOptions();
  EXPECT_EQ(o.tables.tier, "nvme");
  EXPECT_FALSE(o.tables.prefetch);
  EXPECT_EQ(o.tables.cache_bytes, 1048576u);
  EXPECT_EQ(o.tables.cache_policy, "lru");
  auto back = ServerConfig::FromYaml(c->ToYaml(), "model.yaml");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->tables, c->tables);
}

TEST(ServerConfig, RefusesUnknownTier) {
  EXPECT_EQ(ErrorMessage("model: synth:tiny\ntables:\n  tier: tape\n"),
            "model.yaml: tables.tier: \"tape\" (expected one of: resident, dram, nvme)");
}

// Found by fuzz_server_config (tests/fuzz/findings/server_config): yaml-cpp's LoadAll never
// returned on a lone ",", and a non-UTF-8 path did not survive the ToYaml round trip.
TEST(ServerConfig, FuzzFindingsAreClearErrors) {
  auto comma = ServerConfig::FromYaml(",", "m.yaml");
  EXPECT_FALSE(comma.ok());
  auto bad = ServerConfig::FromYaml("model: \xff\xfe\n", "m.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("model: byte 0 is not valid UTF-8"), std::string::npos)
      << bad.status().message();
  for (const char* nonchar : {"model: \"/m/\xef\xb7\x9c\"\n", "model: \"/m/\xef\xbf\xbe\"\n"}) {
    auto nc = ServerConfig::FromYaml(nonchar, "m.yaml");
    ASSERT_FALSE(nc.ok()) << nonchar;
    EXPECT_NE(nc.status().message().find("model: byte 3 starts the Unicode noncharacter"),
              std::string::npos)
        << nc.status().message();
  }
  auto two = ServerConfig::FromYaml("model: a\n---\nmodel: b\n", "m.yaml");
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("holds 2 YAML documents"), std::string::npos)
      << two.status().message();
  EXPECT_TRUE(ServerConfig::FromYaml("---\nmodel: synth:tiny\n...\n", "m.yaml").ok());
}

}  // namespace
}  // namespace engram
