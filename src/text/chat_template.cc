#include "text/chat_template.h"

#include <filesystem>

#include "common/file_read.h"
#include "text/jinja_parser.h"
#include "text/jinja_render.h"

namespace engram {

struct ChatTemplate::Parsed {
  jinja::Body body;
};

namespace {

constexpr size_t kMaxTemplateBytes = 1 << 20;

using OJson = nlohmann::ordered_json;

// bos_token / eos_token of a tokenizer_config.json: a string or {"content": ...}.
std::string SpecialToken(const OJson& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

Result<OJson> ReadConfig(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(std::string text,
                          ReadRegularFile(path, kMaxSidecarFileBytes, "tokenizer_config.json"));
  OJson j = OJson::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument("{}: not a JSON object (expected tokenizer_config.json)", path);
  }
  return j;
}

}  // namespace

Result<ChatTemplate> ChatTemplate::Parse(std::string text, std::string source,
                                         std::string bos_token, std::string eos_token) {
  if (text.size() > kMaxTemplateBytes) {
    return InvalidArgument("{}: the chat template is {} bytes, at most {} are accepted", source,
                           text.size(), kMaxTemplateBytes);
  }
  ENGRAM_ASSIGN_OR_RETURN(jinja::Body body, jinja::Parse(text, source));
  ChatTemplate t;
  auto parsed = std::make_shared<Parsed>();
  parsed->body = std::move(body);
  t.parsed_ = std::move(parsed);
  t.text_ = std::move(text);
  t.source_ = std::move(source);
  t.bos_ = std::move(bos_token);
  t.eos_ = std::move(eos_token);
  return t;
}

Result<std::optional<ChatTemplate>> ChatTemplate::FromTokenizerConfig(const std::string& path,
                                                                      const std::string& name) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<ChatTemplate>();
  ENGRAM_ASSIGN_OR_RETURN(OJson cfg, ReadConfig(path));
  auto it = cfg.find("chat_template");
  if (it == cfg.end() || it->is_null()) return std::optional<ChatTemplate>();
  const std::string want = name.empty() ? "default" : name;
  std::string text;
  if (it->is_string()) {
    if (!name.empty() && name != "default") {
      return NotFound("{}: chat_template is a single template, there is none named \"{}\"", path,
                      name);
    }
    text = it->get<std::string>();
  } else if (it->is_array()) {
    std::string names;
    bool found = false;
    for (const auto& t : *it) {
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string() ||
          !t.contains("template") || !t["template"].is_string()) {
        return InvalidArgument(
            "{}: chat_template: expected a list of {{\"name\", \"template\"}} objects", path);
      }
      names += (names.empty() ? "" : ", ") + t["name"].get<std::string>();
      if (t["name"] == want) {
        text = t["template"].get<std::string>();
        found = true;
      }
    }
    if (!found) {
      return NotFound("{}: chat_template has no template named \"{}\" (it has: {})", path, want,
                      names);
    }
  } else {
    return InvalidArgument("{}: chat_template: expected a string or a list of named templates",
                           path);
  }
  ENGRAM_ASSIGN_OR_RETURN(ChatTemplate t,
                          Parse(std::move(text), path + " chat_template",
                                SpecialToken(cfg, "bos_token"), SpecialToken(cfg, "eos_token")));
  return std::optional<ChatTemplate>(std::move(t));
}

Result<ChatTemplate> ChatTemplate::FromFile(const std::string& path,
                                            const std::string& tokenizer_config_path) {
  ENGRAM_ASSIGN_OR_RETURN(std::string text,
                          ReadRegularFile(path, kMaxTemplateBytes, "chat_template"));
  std::string bos, eos;
  std::error_code ec;
  if (!tokenizer_config_path.empty() && std::filesystem::exists(tokenizer_config_path, ec)) {
    ENGRAM_ASSIGN_OR_RETURN(OJson cfg, ReadConfig(tokenizer_config_path));
    bos = SpecialToken(cfg, "bos_token");
    eos = SpecialToken(cfg, "eos_token");
  }
  return Parse(std::move(text), path, std::move(bos), std::move(eos));
}

Result<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                         bool add_generation_prompt,
                                         const nlohmann::ordered_json& tools,
                                         const nlohmann::ordered_json& extra) const {
  using jinja::Value;
  jinja::Dict vars;
  vars.emplace_back(Value("messages"), Value::FromJson(messages));
  vars.emplace_back(Value("tools"), tools.is_null() ? Value::None() : Value::FromJson(tools));
  vars.emplace_back(Value("documents"), Value::None());
  vars.emplace_back(Value("add_generation_prompt"), Value(add_generation_prompt));
  vars.emplace_back(Value("bos_token"), Value(bos_));
  vars.emplace_back(Value("eos_token"), Value(eos_));
  Value all = Value::FromDict(std::move(vars));
  if (extra.is_object()) {
    for (const auto& [k, v] : extra.items()) all.Set(Value(k), Value::FromJson(v));
  }
  return jinja::Render(parsed_->body, all, source_);
}

}  // namespace engram
