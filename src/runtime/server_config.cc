#include "runtime/server_config.h"

#include "common/file_read.h"
#include "common/host_port.h"
#include "kernels/backend.h"
#include "tiering/numa_topology.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "model/synth.h"
#include "runtime/api_keys.h"
#include "runtime/tls_files.h"
#include "text/utf8.h"

namespace engram {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSynthPrefix = "synth:";

bool IsSynth(std::string_view model) { return model.starts_with(kSynthPrefix); }

using Keys = std::span<const std::string_view>;

constexpr std::string_view kTopKeys[] = {"model",   "tokenizer", "add_bos",      "backend",
                                         "server",  "limits",    "tables",       "logging",
                                         "metrics", "http",      "chat_template"};
constexpr std::string_view kHttpKeys[] = {"listen", "max_body_bytes", "idle_timeout_s",
                                          "max_connections", "model_name"};
constexpr std::string_view kTablesKeys[] = {"tier",        "prefetch",        "dram_budget_bytes",
                                            "cache_bytes", "cache_policy",    "transfer",
                                            "pin",         "hot_cache_bytes", "verify_checksums",
                                            "numa",        "numa_node",       "nvme_merge_bytes"};
constexpr std::string_view kNumaModes[] = {"auto", "bind", "interleave", "none"};
constexpr std::string_view kTransfers[] = {"copy", "zero_copy"};
constexpr std::string_view kPins[] = {"auto", "on", "off"};
constexpr std::string_view kTiers[] = {"resident", "dram", "nvme"};
constexpr std::string_view kCachePolicies[] = {"tinylfu", "lru"};
constexpr std::string_view kBackendKeys[] = {"kind", "threads", "device", "cuda_graphs", "weights"};
constexpr std::string_view kServerKeys[] = {
    "listen", "max_message_bytes", "drain_grace_s", "handler_threads",
    "tls",    "api_keys",          "api_key_file",  "allow_insecure_remote"};
constexpr std::string_view kTlsKeys[] = {"cert", "key", "client_ca"};
constexpr std::string_view kLimitsKeys[] = {
    "max_running_seqs",   "max_batch_tokens", "prefill_chunk_tokens", "max_waiting",
    "max_tokens_default", "kv_tokens",        "kv_block_size"};
constexpr std::string_view kLoggingKeys[] = {"level"};
constexpr std::string_view kMetricsKeys[] = {"listen", "require_auth"};
constexpr std::string_view kBackendKinds[] = {"cpu", "cuda"};
constexpr std::string_view kWeightFormats[] = {"auto", "bf16", "int8"};
constexpr std::string_view kLogLevels[] = {"trace", "debug",    "info", "warn",
                                           "error", "critical", "off"};

std::string Join(Keys keys) {
  std::string out;
  for (std::string_view k : keys) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

const char* NodeKind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Scalar:
      return "a scalar";
    default:
      return "no value";
  }
}

// A relative path made relative to `base` (unchanged when base is empty or path absolute).
std::string Resolve(const fs::path& base, const std::string& path) {
  const fs::path p(path);
  if (base.empty() || p.is_absolute()) return path;
  return (base / p).lexically_normal().string();
}

// The keys of one map node, in file order, checked against the allowed set.
struct Section {
  std::string path;  // "" at the top level
  std::vector<std::pair<std::string, YAML::Node>> items;

  std::string KeyPath(std::string_view key) const {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  const YAML::Node* Find(std::string_view key) const {
    for (const auto& [k, v] : items) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

class Parser {
 public:
  Parser(std::string source, fs::path base) : source_(std::move(source)), base_(std::move(base)) {}

  Status Parse(const YAML::Node& root, ServerConfig& c);

 private:
  template <typename... Args>
  Status Error(fmt::format_string<Args...> f, Args&&... args) const {
    return InvalidArgument("{}: {}", source_, fmt::format(f, std::forward<Args>(args)...));
  }

  // `node` as a Section: a map (or no value: an empty section) whose keys are all allowed.
  Result<Section> ReadSection(const YAML::Node& node, const std::string& path, Keys allowed) const;
  // The scalar text at `key`; nullopt when the key is absent.
  Result<std::optional<std::string>> Scalar(const Section& s, std::string_view key,
                                            const char* expected, bool* plain = nullptr) const;
  template <typename T>
  Status Int(const Section& s, std::string_view key, int64_t min, int64_t max, T& out) const;
  Status Double(const Section& s, std::string_view key, double min, double max, double& out) const;
  Status Bool(const Section& s, std::string_view key, std::optional<bool>& out) const;
  Status String(const Section& s, std::string_view key, std::string& out) const;
  Status Enum(const Section& s, std::string_view key, Keys allowed, std::string& out) const;
  Status Listen(const Section& s, std::string_view key, bool allow_empty, std::string& out) const;
  Status Model(ServerConfig& c) const;
  // A path (resolved against the config's directory); "" stays "" only if allowed.
  Status Path(const Section& s, std::string_view key, std::string& out) const;
  Status ApiKeys(const Section& s, std::vector<std::string>& out) const;

  std::string source_;
  fs::path base_;
};

Result<Section> Parser::ReadSection(const YAML::Node& node, const std::string& path,
                                    Keys allowed) const {
  Section s;
  s.path = path;
  if (!node.IsDefined() || node.IsNull()) return s;
  if (!node.IsMap()) {
    if (path.empty())
      return Error("expected a map of keys at the top level, found {}", NodeKind(node));
    return Error("{}: expected a map, found {}", path, NodeKind(node));
  }
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (!it->first.IsScalar()) {
      return Error("{}key at line {} is {}, not a name", path.empty() ? "" : path + ": ",
                   it->first.Mark().line + 1, NodeKind(it->first));
    }
    const std::string key = it->first.Scalar();
    bool known = false;
    for (std::string_view a : allowed) known = known || a == key;
    if (!known) return Error("unknown key \"{}\" (allowed: {})", s.KeyPath(key), Join(allowed));
    if (s.Find(key)) return Error("duplicate key \"{}\"", s.KeyPath(key));
    s.items.emplace_back(key, it->second);
  }
  return s;
}

Result<std::optional<std::string>> Parser::Scalar(const Section& s, std::string_view key,
                                                  const char* expected, bool* plain) const {
  const YAML::Node* n = s.Find(key);
  if (!n) return std::optional<std::string>();
  if (!n->IsScalar()) {
    return Error("{}: expected {}, found {}", s.KeyPath(key), expected, NodeKind(*n));
  }
  // Plain (unquoted) scalars carry the non-specific tag "?", quoted ones "!".
  if (plain) *plain = n->Tag() == "?";
  return std::optional<std::string>(n->Scalar());
}

std::string RangeText(int64_t min, int64_t max) { return fmt::format("{}..{}", min, max); }

template <typename T>
Status Parser::Int(const Section& s, std::string_view key, int64_t min, int64_t max, T& out) const {
  bool plain = false;
  ENGRAM_ASSIGN_OR_RETURN(std::optional<std::string> text, Scalar(s, key, "an integer", &plain));
  if (!text) return Status::Ok();
  std::string_view digits = *text;
  if (digits.starts_with('+')) digits.remove_prefix(1);
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  const bool whole = !digits.empty() && end == digits.data() + digits.size();
  if (plain && whole && ec == std::errc::result_out_of_range) {
    return Error("{}: {} is out of range (expected {})", s.KeyPath(key), *text,
                 RangeText(min, max));
  }
  if (!plain || !whole || ec != std::errc()) {
    return Error("{}: \"{}\" is not an integer", s.KeyPath(key), *text);
  }
  if (v < min || v > max) {
    return Error("{}: {} is out of range (expected {})", s.KeyPath(key), v, RangeText(min, max));
  }
  out = static_cast<T>(v);
  return Status::Ok();
}

Status Parser::Double(const Section& s, std::string_view key, double min, double max,
                      double& out) const {
  bool plain = false;
  ENGRAM_ASSIGN_OR_RETURN(std::optional<std::string> text, Scalar(s, key, "a number", &plain));
  if (!text) return Status::Ok();
  char* end = nullptr;
  const double v = std::strtod(text->c_str(), &end);
  if (!plain || text->empty() || end != text->c_str() + text->size() || !std::isfinite(v)) {
    return Error("{}: \"{}\" is not a number", s.KeyPath(key), *text);
  }
  if (v < min || v > max) {
    return Error("{}: {} is out of range (expected {}..{})", s.KeyPath(key), *text, min, max);
  }
  out = v;
  return Status::Ok();
}

Status Parser::Bool(const Section& s, std::string_view key, std::optional<bool>& out) const {
  bool plain = false;
  ENGRAM_ASSIGN_OR_RETURN(std::optional<std::string> text, Scalar(s, key, "true or false", &plain));
  if (!text) return Status::Ok();
  const std::string& t = *text;
  if (plain && (t == "true" || t == "True" || t == "TRUE")) {
    out = true;
  } else if (plain && (t == "false" || t == "False" || t == "FALSE")) {
    out = false;
  } else {
    return Error("{}: \"{}\" is not a boolean (expected true or false)", s.KeyPath(key), t);
  }
  return Status::Ok();
}

Status Parser::String(const Section& s, std::string_view key, std::string& out) const {
  ENGRAM_ASSIGN_OR_RETURN(std::optional<std::string> text, Scalar(s, key, "a string"));
  if (!text) return Status::Ok();
  if (const size_t bad = utf8::FirstInvalid(*text); bad != utf8::kValid) {
    return Error("{}: byte {} is not valid UTF-8 (expected UTF-8 text)", s.KeyPath(key), bad);
  }
  // Noncharacters are valid UTF-8 but not text: yaml-cpp's emitter does not write them back
  // as it read them (found by fuzz_server_config), so ToYaml would not round-trip.
  for (size_t pos = 0; pos < text->size();) {
    const size_t at = pos;
    const char32_t cp = utf8::Next(*text, &pos);
    if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) {
      return Error("{}: byte {} starts the Unicode noncharacter U+{:04X} (expected text)",
                   s.KeyPath(key), at, static_cast<uint32_t>(cp));
    }
  }
  out = std::move(*text);
  return Status::Ok();
}

Status Parser::Enum(const Section& s, std::string_view key, Keys allowed, std::string& out) const {
  ENGRAM_ASSIGN_OR_RETURN(std::optional<std::string> text,
                          Scalar(s, key, fmt::format("one of: {}", Join(allowed)).c_str()));
  if (!text) return Status::Ok();
  for (std::string_view a : allowed) {
    if (a == *text) {
      out = std::move(*text);
      return Status::Ok();
    }
  }
  return Error("{}: \"{}\" (expected one of: {})", s.KeyPath(key), *text, Join(allowed));
}

// host:port with host a name, an IPv4 address or a bracketed IPv6 address; port 0..65535.
Status Parser::Listen(const Section& s, std::string_view key, bool allow_empty,
                      std::string& out) const {
  std::string v = out;
  ENGRAM_RETURN_IF_ERROR(String(s, key, v));
  if (v.empty() && allow_empty) {
    out = v;
    return Status::Ok();
  }
  const auto bad = [&] {
    return Error("{}: \"{}\" is not host:port (e.g. 127.0.0.1:50051, [::1]:50051, 0.0.0.0:0){}",
                 s.KeyPath(key), v, allow_empty ? " or \"\" (disabled)" : "");
  };
  const size_t colon = v.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad();
  const std::string_view host(v.data(), colon), port(v.data() + colon + 1, v.size() - colon - 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad();
    for (char ch : host.substr(1, host.size() - 2)) {
      if (!std::isxdigit(static_cast<unsigned char>(ch)) && ch != ':' && ch != '.') return bad();
    }
  } else {
    for (char ch : host) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_') {
        return bad();
      }
    }
  }
  if (port.empty() || port.size() > 9) return bad();
  for (char ch : port) {
    if (!std::isdigit(static_cast<unsigned char>(ch))) return bad();
  }
  const long p = std::strtol(std::string(port).c_str(), nullptr, 10);
  if (p > 65535) {
    return Error("{}: port {} is out of range (expected 0..65535)", s.KeyPath(key), p);
  }
  out = v;
  return Status::Ok();
}

Status Parser::Path(const Section& s, std::string_view key, std::string& out) const {
  if (!s.Find(key)) return Status::Ok();
  std::string v;
  ENGRAM_RETURN_IF_ERROR(String(s, key, v));
  if (v.empty()) return Error("{}: \"\" is empty (expected a file path)", s.KeyPath(key));
  out = Resolve(base_, v);
  return Status::Ok();
}

// api_keys: a list of keys; each 16..256 printable ASCII characters without spaces (what an
// Authorization header carries unchanged), no duplicates.
Status Parser::ApiKeys(const Section& s, std::vector<std::string>& out) const {
  const YAML::Node* n = s.Find("api_keys");
  if (!n) return Status::Ok();
  if (!n->IsSequence()) {
    return Error("{}: expected a list of keys, found {}", s.KeyPath("api_keys"), NodeKind(*n));
  }
  for (size_t i = 0; i < n->size(); ++i) {
    const YAML::Node& k = (*n)[i];
    const std::string where = fmt::format("{}[{}]", s.KeyPath("api_keys"), i);
    if (!k.IsScalar()) return Error("{}: expected a key (a string), found {}", where, NodeKind(k));
    if (Status st = CheckApiKey(k.Scalar()); !st.ok()) {
      return Error("{}: {}", where, st.message());  // the key itself is never echoed
    }
    for (const std::string& seen : out) {
      if (seen == k.Scalar()) return Error("{}: the same key is listed twice", where);
    }
    out.push_back(k.Scalar());
  }
  return Status::Ok();
}

// model: required, non-empty; a relative directory or synth tokenizer= path is resolved.
Status Parser::Model(ServerConfig& c) const {
  if (c.model.empty()) {
    return Error("model: \"\" is empty (expected a model directory or synth:PRESET)");
  }
  if (!IsSynth(c.model)) {
    c.model = Resolve(base_, c.model);
    return Status::Ok();
  }
  const std::string rest = c.model.substr(kSynthPrefix.size());
  const size_t q = rest.find('?');
  const std::string preset = rest.substr(0, q);
  const std::vector<std::string> presets = SynthPresetNames();
  bool known = false;
  for (const std::string& p : presets) known = known || p == preset;
  if (!known) {
    std::string names;
    for (const std::string& p : presets) names += (names.empty() ? "" : ", ") + p;
    return Error("model: unknown synth preset \"{}\" (expected one of: {})", preset, names);
  }
  if (q == std::string::npos) return Status::Ok();
  // Rebuild the query with a resolved tokenizer= path; other parameters are OpenModel's.
  std::string out = std::string(kSynthPrefix) + preset + "?";
  const std::string query = rest.substr(q + 1);
  size_t pos = 0;
  bool first = true;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    std::string item = query.substr(pos, amp - pos);
    pos = amp + 1;
    if (item.rfind("tokenizer=", 0) == 0) {
      if (!c.tokenizer.empty()) {
        return Error(
            "tokenizer: set both as a key and as the tokenizer= parameter of model (use "
            "one)");
      }
      item = "tokenizer=" + Resolve(base_, item.substr(10));
    }
    out += (first ? "" : "&") + item;
    first = false;
  }
  c.model = out;
  return Status::Ok();
}

Status Parser::Parse(const YAML::Node& root, ServerConfig& c) {
  ENGRAM_ASSIGN_OR_RETURN(Section top, ReadSection(root, "", kTopKeys));
  if (!top.Find("model")) {
    return Error("missing required key \"model\" (a model directory or synth:PRESET)");
  }
  ENGRAM_RETURN_IF_ERROR(String(top, "model", c.model));
  ENGRAM_RETURN_IF_ERROR(String(top, "tokenizer", c.tokenizer));
  if (top.Find("tokenizer") && c.tokenizer.empty()) {
    return Error("tokenizer: \"\" is empty (expected the path of a tokenizer.json)");
  }
  ENGRAM_RETURN_IF_ERROR(Bool(top, "add_bos", c.add_bos));
  ENGRAM_RETURN_IF_ERROR(Path(top, "chat_template", c.chat_template));
  if (IsSynth(c.model) && c.tokenizer.find_first_of("&?") != std::string::npos) {
    return Error("tokenizer: \"{}\" holds '&' or '?', which a synth model spec cannot carry",
                 c.tokenizer);
  }
  ENGRAM_RETURN_IF_ERROR(Model(c));
  c.tokenizer = c.tokenizer.empty() ? "" : Resolve(base_, c.tokenizer);

  const auto section = [&](const char* name, Keys keys) -> Result<Section> {
    const YAML::Node* n = top.Find(name);
    return ReadSection(n ? *n : YAML::Node(), name, keys);
  };

  ENGRAM_ASSIGN_OR_RETURN(Section backend, section("backend", kBackendKeys));
  auto& b = c.backend;
  ENGRAM_RETURN_IF_ERROR(Enum(backend, "kind", kBackendKinds, b.kind));
  ENGRAM_RETURN_IF_ERROR(Int(backend, "threads", 0, 4096, b.threads));
  ENGRAM_RETURN_IF_ERROR(Int(backend, "device", 0, 1023, b.device));
  std::optional<bool> cuda_graphs;
  ENGRAM_RETURN_IF_ERROR(Bool(backend, "cuda_graphs", cuda_graphs));
  if (cuda_graphs) b.cuda_graphs = *cuda_graphs;
  ENGRAM_RETURN_IF_ERROR(Enum(backend, "weights", kWeightFormats, b.weights));

  ENGRAM_ASSIGN_OR_RETURN(Section server, section("server", kServerKeys));
  auto& s = c.server;
  ENGRAM_RETURN_IF_ERROR(Listen(server, "listen", false, s.listen));
  ENGRAM_RETURN_IF_ERROR(
      Int(server, "max_message_bytes", 1024, std::numeric_limits<int>::max(), s.max_message_bytes));
  ENGRAM_RETURN_IF_ERROR(Double(server, "drain_grace_s", 0, 3600, s.drain_grace_s));
  ENGRAM_RETURN_IF_ERROR(Int(server, "handler_threads", 0, 1024, s.handler_threads));
  {
    const YAML::Node* tn = server.Find("tls");
    ENGRAM_ASSIGN_OR_RETURN(Section tls,
                            ReadSection(tn ? *tn : YAML::Node(), "server.tls", kTlsKeys));
    ENGRAM_RETURN_IF_ERROR(Path(tls, "cert", s.tls.cert));
    ENGRAM_RETURN_IF_ERROR(Path(tls, "key", s.tls.key));
    ENGRAM_RETURN_IF_ERROR(Path(tls, "client_ca", s.tls.client_ca));
    if (s.tls.cert.empty() != s.tls.key.empty()) {
      return Error("server.tls: cert and key go together (expected both PEM files, or neither)");
    }
    if (!s.tls.client_ca.empty() && s.tls.cert.empty()) {
      return Error(
          "server.tls.client_ca needs server.tls.cert and server.tls.key (mutual TLS is "
          "TLS first)");
    }
  }
  ENGRAM_RETURN_IF_ERROR(ApiKeys(server, s.api_keys));
  ENGRAM_RETURN_IF_ERROR(Path(server, "api_key_file", s.api_key_file));
  {
    std::optional<bool> insecure;
    ENGRAM_RETURN_IF_ERROR(Bool(server, "allow_insecure_remote", insecure));
    if (insecure) s.allow_insecure_remote = *insecure;
  }

  ENGRAM_ASSIGN_OR_RETURN(Section limits, section("limits", kLimitsKeys));
  auto& l = c.limits;
  ENGRAM_RETURN_IF_ERROR(Int(limits, "max_running_seqs", 1, 4096, l.max_running_seqs));
  ENGRAM_RETURN_IF_ERROR(Int(limits, "max_batch_tokens", 16, 1 << 20, l.max_batch_tokens));
  ENGRAM_RETURN_IF_ERROR(Int(limits, "prefill_chunk_tokens", 1, 1 << 20, l.prefill_chunk_tokens));
  ENGRAM_RETURN_IF_ERROR(Int(limits, "max_waiting", 1, 1000000, l.max_waiting));
  ENGRAM_RETURN_IF_ERROR(Int(limits, "max_tokens_default", 1, 1 << 20, l.max_tokens_default));
  ENGRAM_RETURN_IF_ERROR(Int(limits, "kv_tokens", 16, int64_t{1} << 30, l.kv_tokens));
  ENGRAM_RETURN_IF_ERROR(Int(limits, "kv_block_size", 1, 256, l.kv_block_size));
  if ((l.kv_block_size & (l.kv_block_size - 1)) != 0) {
    return Error("limits.kv_block_size: {} is not a power of two (expected 1, 2, 4, ..., 256)",
                 l.kv_block_size);
  }
  if (l.prefill_chunk_tokens > l.max_batch_tokens) {
    return Error("limits.prefill_chunk_tokens: {} exceeds limits.max_batch_tokens ({})",
                 l.prefill_chunk_tokens, l.max_batch_tokens);
  }
  if (l.max_tokens_default > l.kv_tokens) {
    return Error("limits.max_tokens_default: {} exceeds limits.kv_tokens ({})",
                 l.max_tokens_default, l.kv_tokens);
  }

  ENGRAM_ASSIGN_OR_RETURN(Section tables, section("tables", kTablesKeys));
  auto& t = c.tables;
  ENGRAM_RETURN_IF_ERROR(Enum(tables, "tier", kTiers, t.tier));
  std::optional<bool> prefetch;
  ENGRAM_RETURN_IF_ERROR(Bool(tables, "prefetch", prefetch));
  if (prefetch) t.prefetch = *prefetch;
  ENGRAM_RETURN_IF_ERROR(
      Int(tables, "dram_budget_bytes", 0, int64_t{1} << 50, t.dram_budget_bytes));
  ENGRAM_RETURN_IF_ERROR(Int(tables, "cache_bytes", 0, int64_t{1} << 50, t.cache_bytes));
  ENGRAM_RETURN_IF_ERROR(Enum(tables, "cache_policy", kCachePolicies, t.cache_policy));
  ENGRAM_RETURN_IF_ERROR(Enum(tables, "transfer", kTransfers, t.transfer));
  ENGRAM_RETURN_IF_ERROR(Enum(tables, "pin", kPins, t.pin));
  ENGRAM_RETURN_IF_ERROR(Enum(tables, "numa", kNumaModes, t.numa));
  ENGRAM_RETURN_IF_ERROR(Int(tables, "numa_node", -1, 1023, t.numa_node));
  ENGRAM_RETURN_IF_ERROR(Int(tables, "hot_cache_bytes", 0, int64_t{1} << 50, t.hot_cache_bytes));
  ENGRAM_RETURN_IF_ERROR(Int(tables, "nvme_merge_bytes", 0, int64_t{1} << 20, t.nvme_merge_bytes));
  std::optional<bool> verify;
  ENGRAM_RETURN_IF_ERROR(Bool(tables, "verify_checksums", verify));
  if (verify) t.verify_checksums = *verify;
  if (t.transfer == "zero_copy" && t.tier != "dram") {
    return Error(
        "tables.transfer: zero_copy reads the tables in place from host memory and needs "
        "tables.tier dram (tier is {})",
        t.tier);
  }

  ENGRAM_ASSIGN_OR_RETURN(Section logging, section("logging", kLoggingKeys));
  ENGRAM_RETURN_IF_ERROR(Enum(logging, "level", kLogLevels, c.logging.level));

  ENGRAM_ASSIGN_OR_RETURN(Section metrics, section("metrics", kMetricsKeys));
  ENGRAM_RETURN_IF_ERROR(Listen(metrics, "listen", true, c.metrics.listen));
  {
    std::optional<bool> require_auth;
    ENGRAM_RETURN_IF_ERROR(Bool(metrics, "require_auth", require_auth));
    if (require_auth) c.metrics.require_auth = *require_auth;
  }
  if (!c.metrics.listen.empty() && c.metrics.listen == c.server.listen &&
      !c.server.listen.ends_with(":0")) {
    return Error("metrics.listen: \"{}\" is also server.listen (expected another port)",
                 c.metrics.listen);
  }

  ENGRAM_ASSIGN_OR_RETURN(Section http, section("http", kHttpKeys));
  auto& h = c.http;
  ENGRAM_RETURN_IF_ERROR(Listen(http, "listen", true, h.listen));
  ENGRAM_RETURN_IF_ERROR(Int(http, "max_body_bytes", 1024, int64_t{1} << 30, h.max_body_bytes));
  ENGRAM_RETURN_IF_ERROR(Int(http, "idle_timeout_s", 1, 3600, h.idle_timeout_s));
  ENGRAM_RETURN_IF_ERROR(Int(http, "max_connections", 1, 65536, h.max_connections));
  ENGRAM_RETURN_IF_ERROR(String(http, "model_name", h.model_name));
  if (!h.listen.empty() && !h.listen.ends_with(":0")) {
    for (const auto& [key, other] :
         {std::pair<const char*, const std::string*>{"server.listen", &c.server.listen},
          {"metrics.listen", &c.metrics.listen}}) {
      if (h.listen == *other) {
        return Error("http.listen: \"{}\" is also {} (expected another port)", h.listen, key);
      }
    }
  }

  // A listener reachable from other machines must not be open to anyone by accident.
  if (!s.allow_insecure_remote && !s.tls.enabled() && !s.auth_enabled()) {
    for (const auto& [key, listen] :
         {std::pair<const char*, const std::string*>{"server.listen", &s.listen},
          {"http.listen", &h.listen}}) {
      if (!listen->empty() && !IsLoopbackListen(*listen)) {
        return Error(
            "{}: \"{}\" is reachable from other machines, but there is neither TLS "
            "(server.tls) nor an API key (server.api_keys / server.api_key_file): anyone who "
            "reaches it could use the model (expected a loopback address such as 127.0.0.1, "
            "TLS or keys, or server.allow_insecure_remote: true to mean it)",
            key, *listen);
      }
    }
  }
  return Status::Ok();
}

// Documents in a YAML stream: content before the first "---" line counts as one, and every
// further "---" line starts another (a "---" first, before any content, starts the first).
int CountYamlDocuments(const std::string& text) {
  int docs = 0;
  bool content = false;  // the current document has content or an explicit start
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    const bool marker = line.rfind("---", 0) == 0 &&
                        (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r');
    if (marker) {
      ++docs;
      content = true;
      continue;
    }
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string_view::npos || line[first] == '#') continue;
    if (line.rfind("...", 0) == 0) {
      content = false;
      continue;
    }
    if (!content) {
      ++docs;
      content = true;
    }
  }
  return docs;
}

Result<ServerConfig> Parse(const std::string& text, const std::string& source,
                           const fs::path& base) {
  ServerConfig c;
  try {
    // Documents are counted from the text: yaml-cpp's LoadAll never returns on some inputs
    // (a lone ",": found by fuzz_server_config).
    if (const int docs = CountYamlDocuments(text); docs > 1) {
      return InvalidArgument("{}: holds {} YAML documents (expected one)", source, docs);
    }
    ENGRAM_RETURN_IF_ERROR(Parser(source, base).Parse(YAML::Load(text), c));
  } catch (const YAML::ParserException& e) {
    return InvalidArgument("{}: YAML syntax error at line {}, column {}: {}", source,
                           e.mark.line + 1, e.mark.column + 1, e.msg);
  } catch (const YAML::Exception& e) {
    return InvalidArgument("{}: {}", source, e.what());
  }
  return c;
}

}  // namespace

Result<ServerConfig> ServerConfig::LoadFile(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(std::string text,
                          ReadRegularFile(path, kMaxConfigFileBytes, "config file"));
  std::error_code ec;
  fs::path base = fs::absolute(fs::path(path), ec).parent_path();
  if (ec) base = fs::path(path).parent_path();
  return Parse(text, path, base.lexically_normal());
}

Result<ServerConfig> ServerConfig::FromYaml(const std::string& text, const std::string& source) {
  return Parse(text, source, fs::path(source).parent_path());
}

std::string ServerConfig::ModelSpec() const {
  if (!IsSynth(model) || tokenizer.empty()) return model;
  return model + (model.find('?') == std::string::npos ? "?" : "&") + "tokenizer=" + tokenizer;
}

Result<ModelFiles> ServerConfig::OpenModelFiles() const {
  ENGRAM_ASSIGN_OR_RETURN(ModelFiles files, OpenModel(ModelSpec()));
  if (!IsSynth(model) && !tokenizer.empty()) {
    std::error_code ec;
    if (!fs::is_regular_file(tokenizer, ec)) {
      return NotFound("tokenizer: {}: no such file", tokenizer);
    }
    files.tokenizer_path = tokenizer;
    ENGRAM_ASSIGN_OR_RETURN(files.chat_template, ChatTemplateBeside(tokenizer));
  }
  if (!chat_template.empty()) {
    const std::string tcfg =
        files.tokenizer_path.empty()
            ? ""
            : (fs::path(files.tokenizer_path).parent_path() / "tokenizer_config.json").string();
    ENGRAM_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::FromFile(chat_template, tcfg));
    files.chat_template = std::make_shared<const ChatTemplate>(std::move(t));
  }
  return files;
}

std::string ServerConfig::ServedModelName() const {
  if (!http.model_name.empty()) return http.model_name;
  if (IsSynth(model)) return model.substr(0, model.find('?'));
  std::string name = fs::path(model).lexically_normal().filename().string();
  if (name.empty()) name = fs::path(model).lexically_normal().parent_path().filename().string();
  return name.empty() ? model : name;
}

Status ServerConfig::CheckEnvironment() const {
  ENGRAM_RETURN_IF_ERROR(ResolveListenAddress(server.listen, "server.listen").status());
  if (!metrics.listen.empty()) {
    ENGRAM_RETURN_IF_ERROR(ResolveListenAddress(metrics.listen, "metrics.listen").status());
  }
  if (!http.listen.empty()) {
    ENGRAM_RETURN_IF_ERROR(ResolveListenAddress(http.listen, "http.listen").status());
  }
  ENGRAM_RETURN_IF_ERROR(LoadTlsFiles(*this).status());
  ENGRAM_RETURN_IF_ERROR(ApiKeys::Load(*this).status());
  if (tables.tier == "dram" && tables.numa_node >= 0) {
    ENGRAM_ASSIGN_OR_RETURN(NumaTopology topo, NumaTopology::Load());
    bool found = false;
    std::string nodes;
    for (const NumaNode& n : topo.nodes()) {
      found = found || n.os_index == tables.numa_node;
      nodes += (nodes.empty() ? "" : ", ") + std::to_string(n.os_index);
    }
    if (!found) {
      return InvalidArgument("tables.numa_node: {} is not a NUMA node of this machine (nodes: {})",
                             tables.numa_node, nodes);
    }
  }
  if (backend.kind == "cuda") {
    auto b = CreateBackend(ToEngineOptions().backend);
    if (!b.ok()) return b.status().WithContext("backend");
  }
  return Status::Ok();
}

ServingOptions ServerConfig::ToServingOptions() const {
  ServingOptions o;
  o.limits.max_running_seqs = limits.max_running_seqs;
  o.limits.max_batch_tokens = limits.max_batch_tokens;
  o.limits.prefill_chunk_tokens = limits.prefill_chunk_tokens;
  o.limits.max_waiting = limits.max_waiting;
  o.max_tokens_default = limits.max_tokens_default;
  o.model_name = ServedModelName();
  return o;
}

EngineOptions ServerConfig::ToEngineOptions() const {
  EngineOptions o;
  o.backend.kind = backend.kind;
  o.backend.threads = backend.threads;
  o.backend.device_index = backend.device;
  o.backend.cuda_graphs = backend.cuda_graphs;
  o.backend.weights = backend.weights;
  o.max_seqs = limits.max_running_seqs;
  o.kv_tokens = limits.kv_tokens;
  o.block_size = limits.kv_block_size;
  o.tables.tier = tables.tier;
  o.tables.prefetch = tables.prefetch;
  o.tables.dram_budget_bytes = static_cast<uint64_t>(tables.dram_budget_bytes);
  o.tables.cache_bytes = static_cast<uint64_t>(tables.cache_bytes);
  o.tables.cache_policy = tables.cache_policy;
  o.tables.transfer = tables.transfer;
  o.tables.pin = tables.pin;
  o.tables.numa = tables.numa;
  o.tables.numa_node = static_cast<int>(tables.numa_node);
  o.tables.hot_cache_bytes = static_cast<uint64_t>(tables.hot_cache_bytes);
  o.tables.nvme_merge_bytes = static_cast<uint32_t>(tables.nvme_merge_bytes);
  o.tables.verify_checksums = tables.verify_checksums;
  return o;
}

std::string ServerConfig::ToYaml() const {
  YAML::Emitter e;
  // Free-form strings are always quoted so that values like "null" or "123" read back as
  // strings; enums and numbers are plain.
  const auto quoted = [&](const char* key, const std::string& v) {
    e << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << v;
  };
  e << YAML::BeginMap;
  quoted("model", model);
  if (!tokenizer.empty()) quoted("tokenizer", tokenizer);
  if (add_bos) e << YAML::Key << "add_bos" << YAML::Value << *add_bos;
  if (!chat_template.empty()) quoted("chat_template", chat_template);

  e << YAML::Key << "backend" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "kind" << YAML::Value << backend.kind;
  e << YAML::Key << "threads" << YAML::Value << backend.threads;
  e << YAML::Key << "device" << YAML::Value << backend.device;
  e << YAML::Key << "cuda_graphs" << YAML::Value << backend.cuda_graphs;
  e << YAML::Key << "weights" << YAML::Value << backend.weights;
  e << YAML::EndMap;

  e << YAML::Key << "server" << YAML::Value << YAML::BeginMap;
  quoted("listen", server.listen);
  e << YAML::Key << "max_message_bytes" << YAML::Value << server.max_message_bytes;
  // fmt's shortest representation reads back to the same double.
  e << YAML::Key << "drain_grace_s" << YAML::Value << fmt::format("{}", server.drain_grace_s);
  e << YAML::Key << "handler_threads" << YAML::Value << server.handler_threads;
  if (server.tls.enabled()) {
    e << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
    quoted("cert", server.tls.cert);
    quoted("key", server.tls.key);
    if (!server.tls.client_ca.empty()) quoted("client_ca", server.tls.client_ca);
    e << YAML::EndMap;
  }
  if (!server.api_keys.empty()) {  // the keys themselves never leave the process
    e << YAML::Comment(fmt::format("api_keys: {} key(s), not shown", server.api_keys.size()));
  }
  if (!server.api_key_file.empty()) quoted("api_key_file", server.api_key_file);
  e << YAML::Key << "allow_insecure_remote" << YAML::Value << server.allow_insecure_remote;
  e << YAML::EndMap;

  e << YAML::Key << "limits" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "max_running_seqs" << YAML::Value << limits.max_running_seqs;
  e << YAML::Key << "max_batch_tokens" << YAML::Value << limits.max_batch_tokens;
  e << YAML::Key << "prefill_chunk_tokens" << YAML::Value << limits.prefill_chunk_tokens;
  e << YAML::Key << "max_waiting" << YAML::Value << limits.max_waiting;
  e << YAML::Key << "max_tokens_default" << YAML::Value << limits.max_tokens_default;
  e << YAML::Key << "kv_tokens" << YAML::Value << limits.kv_tokens;
  e << YAML::Key << "kv_block_size" << YAML::Value << limits.kv_block_size;
  e << YAML::EndMap;
  e << YAML::Key << "tables" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "tier" << YAML::Value << tables.tier;
  e << YAML::Key << "prefetch" << YAML::Value << tables.prefetch;
  e << YAML::Key << "dram_budget_bytes" << YAML::Value << tables.dram_budget_bytes;
  e << YAML::Key << "cache_bytes" << YAML::Value << tables.cache_bytes;
  e << YAML::Key << "cache_policy" << YAML::Value << tables.cache_policy;
  e << YAML::Key << "transfer" << YAML::Value << tables.transfer;
  e << YAML::Key << "pin" << YAML::Value << tables.pin;
  e << YAML::Key << "numa" << YAML::Value << tables.numa;
  e << YAML::Key << "numa_node" << YAML::Value << tables.numa_node;
  e << YAML::Key << "hot_cache_bytes" << YAML::Value << tables.hot_cache_bytes;
  e << YAML::Key << "nvme_merge_bytes" << YAML::Value << tables.nvme_merge_bytes;
  e << YAML::Key << "verify_checksums" << YAML::Value << tables.verify_checksums;
  e << YAML::EndMap;

  e << YAML::Key << "logging" << YAML::Value << YAML::BeginMap;
  e << YAML::Key << "level" << YAML::Value << logging.level;
  e << YAML::EndMap;

  e << YAML::Key << "metrics" << YAML::Value << YAML::BeginMap;
  quoted("listen", metrics.listen);
  e << YAML::Key << "require_auth" << YAML::Value << metrics.require_auth;
  e << YAML::EndMap;

  e << YAML::Key << "http" << YAML::Value << YAML::BeginMap;
  quoted("listen", http.listen);
  e << YAML::Key << "max_body_bytes" << YAML::Value << http.max_body_bytes;
  e << YAML::Key << "idle_timeout_s" << YAML::Value << http.idle_timeout_s;
  e << YAML::Key << "max_connections" << YAML::Value << http.max_connections;
  quoted("model_name", http.model_name);
  e << YAML::EndMap;
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

}  // namespace engram
