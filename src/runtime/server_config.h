// ServerConfig: engramd's configuration file (model.yaml), parsed, validated and resolved.
// docs/operations.md lists every key with its type, default and allowed values.
//
// Parsing is strict: an unknown or duplicate key, a value of the wrong type or outside its
// range, a missing `model`, YAML syntax errors and unreadable files are INVALID_ARGUMENT
// (NOT_FOUND for a missing file) with a message "SOURCE: key.path: what (expected ...)".
// Relative paths (a model directory, `tokenizer`, a synth spec's tokenizer= parameter) are
// resolved against the directory of the config file. Parsing opens nothing but the config
// file: the model and tokenizer are read by OpenModelFiles (their errors name the paths).
//
// A ServerConfig is a plain value: copy it freely; no method mutates it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/model_files.h"
#include "runtime/engine.h"
#include "runtime/engine_loop.h"

namespace engram {

struct ServerConfig {
  // A model directory or "synth:PRESET[?seed=S&dtype=...&table_gb=X&tokenizer=PATH]".
  // Required. Relative directories are resolved (absolute after LoadFile).
  std::string model;
  // tokenizer.json overriding the model's own; empty: the model's. For a synth spec it is
  // passed as the spec's tokenizer= parameter (the vocabulary then follows it).
  std::string tokenizer;
  // A Jinja chat template file replacing the tokenizer_config.json's (resolved path); "": the
  // tokenizer's own.
  std::string chat_template;
  // Whether prompts start with BOS; unset: as the tokenizer's post-processor says.
  std::optional<bool> add_bos;

  struct BackendSection {
    std::string kind = "cpu";      // "cpu" | "cuda"
    int threads = 0;               // CPU compute threads; 0 = one per physical core
    int device = 0;                // CUDA device index
    bool cuda_graphs = false;      // CUDA: decode steps as CUDA graphs (BackendOptions)
    std::string weights = "auto";  // "auto" | "bf16" | "int8": Linear weights (BackendOptions)
    bool operator==(const BackendSection&) const = default;
  } backend;

  struct ServerSection {
    std::string listen = "127.0.0.1:50051";  // host:port of the gRPC service; port 0: ephemeral
    int max_message_bytes = 4 << 20;         // gRPC receive/send limit
    double drain_grace_s = 10;  // on SIGTERM: seconds running requests may still finish
    int handler_threads = 0;    // gRPC handler threads; 0 = gRPC's default
    // TLS for both listeners (gRPC and HTTP), PEM files (resolved paths); cert and key
    // together or neither; client_ca (needs cert) makes clients present a certificate it signed.
    struct Tls {
      std::string cert, key, client_ca;
      bool enabled() const { return !cert.empty(); }
      bool operator==(const Tls&) const = default;
    } tls;
    // API keys required on every method and route (docs/operations.md "Security"): listed
    // here and/or one per line in api_key_file (a resolved path, read at start).
    std::vector<std::string> api_keys;
    std::string api_key_file;
    // Lets a listener bind a non-loopback address with neither TLS nor keys.
    bool allow_insecure_remote = false;
    bool auth_enabled() const { return !api_keys.empty() || !api_key_file.empty(); }
    bool operator==(const ServerSection&) const = default;
  } server;

  struct LimitsSection {
    int max_running_seqs = 64;       // sequences decoding at once (Engine max_seqs)
    int max_batch_tokens = 2048;     // tokens in one engine step
    int prefill_chunk_tokens = 512;  // prompt tokens of one sequence per step
    int max_waiting = 256;           // requests accepted but not yet running (>= 1)
    int max_tokens_default = 256;    // generated tokens when a request names none
    int64_t kv_tokens = 65536;       // KV cache capacity in positions, all sequences
    int kv_block_size = 16;          // positions per KV block (power of two)
    bool operator==(const LimitsSection&) const = default;
  } limits;

  // Where the Engram tables live (docs/operations.md, "tables").
  struct TablesSection {
    std::string tier = "resident";         // resident | dram | nvme
    bool prefetch = true;                  // dram/nvme: fetch rows while earlier layers compute
    int64_t dram_budget_bytes = 0;         // DRAM the host tier may use; 0 = unlimited
    int64_t cache_bytes = 0;               // nvme: DRAM row cache
    std::string cache_policy = "tinylfu";  // tinylfu | lru (row cache and hot cache)
    std::string transfer = "copy";         // dram/nvme: copy | zero_copy (dram only)
    std::string pin = "auto";              // dram: auto (CUDA only) | on | off
    std::string numa = "auto";             // dram: auto | bind | interleave | none
    int64_t numa_node = -1;                // dram, numa bind: the OS node (-1: as auto)
    int64_t hot_cache_bytes = 0;           // dram/nvme: device hot-row cache; 0 = none
    int64_t nvme_merge_bytes = 128 << 10;  // nvme: largest read of neighbouring rows; 0 = off
    bool verify_checksums = true;          // check engram_checksums.json at start
    bool operator==(const TablesSection&) const = default;
  } tables;

  struct LoggingSection {
    std::string level = "info";  // trace|debug|info|warn|error|critical|off
    bool operator==(const LoggingSection&) const = default;
  } logging;

  // The OpenAI-compatible HTTP front door (docs/api.md "HTTP API").
  struct HttpSection {
    std::string listen = "127.0.0.1:8000";  // host:port; "" disables it; port 0: ephemeral
    int64_t max_body_bytes = 8 << 20;       // a larger request body answers 413
    int idle_timeout_s = 30;                // an idle connection is closed after this
    int max_connections = 512;              // open connections (one thread each) at most
    std::string model_name;  // the id /v1/models lists; "": the model directory's name
    bool operator==(const HttpSection&) const = default;
  } http;

  struct MetricsSection {
    std::string listen;         // host:port of the Prometheus endpoint; empty: disabled
    bool require_auth = false;  // /metrics on the HTTP port needs the API key too
    bool operator==(const MetricsSection&) const = default;
  } metrics;

  // Reads and validates the file at `path`; messages start with `path`.
  static Result<ServerConfig> LoadFile(const std::string& path);
  // Parses and validates YAML text; `source` names it in messages, and relative paths are
  // resolved against the directory part of `source` (left as they are if it has none).
  static Result<ServerConfig> FromYaml(const std::string& text, const std::string& source);

  // The model id the HTTP API serves: http.model_name, else the model directory's last path
  // component, else the synth spec without its parameters ("synth:tiny").
  std::string ServedModelName() const;
  // The spec to pass to OpenModel: `model`, with `tokenizer` added as the tokenizer=
  // parameter when the model is a synth spec.
  std::string ModelSpec() const;
  // OpenModel(ModelSpec()), with `tokenizer` replacing a model directory's tokenizer.json.
  Result<ModelFiles> OpenModelFiles() const;
  // What the start would find that the file alone cannot show (engramd --check-config):
  // the TLS files load and fit together, the API key file reads, the listen addresses resolve,
  // tables.numa_node is a node of this machine, and a cuda backend's device exists and is usable.
  // Opens nothing of the model.
  Status CheckEnvironment() const;
  EngineOptions ToEngineOptions() const;
  // The scheduler limits and request defaults of `limits`.
  ServingOptions ToServingOptions() const;
  // The effective configuration (every key, defaults included) as YAML that FromYaml reads
  // back to an equal config, except server.api_keys: only their count, as a comment (the
  // keys never leave the process); for logs and `engramd --check-config`.
  std::string ToYaml() const;

  bool operator==(const ServerConfig&) const = default;
};

}  // namespace engram
