// ChatTemplate: a model's chat template (the Jinja source in tokenizer_config.json, or a file
// named by model.yaml's chat_template), rendered the way Hugging Face transformers'
// apply_chat_template does: Jinja2 with trim_blocks and lstrip_blocks, the variables
// messages, tools (None when there are none), documents (None), add_generation_prompt, the
// tokenizer's bos_token and eos_token, and the request's chat_template_kwargs; globals
// raise_exception and strftime_now; tojson as json.dumps(ensure_ascii=False). The engine is
// src/text/jinja_*; docs/formats.md "Chat templates" lists what it supports.
//
// Thread safety: immutable after construction; Render may run on many threads at once.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace engram {

namespace jinja {
struct Stmt;
}

class ChatTemplate {
 public:
  // Parses `text` (Jinja source); `source` names it in errors. bos/eos: the tokenizer's
  // special token strings (may be empty).
  static Result<ChatTemplate> Parse(std::string text, std::string source, std::string bos_token,
                                    std::string eos_token);
  // tokenizer_config.json at `path`: chat_template as a string, or a list of {"name",
  // "template"} (the one named `name`, default "default"); nullopt when the file does not
  // exist or has no chat_template. bos_token / eos_token from the same file (a string or
  // {"content": ...}).
  static Result<std::optional<ChatTemplate>> FromTokenizerConfig(const std::string& path,
                                                                 const std::string& name = "");
  // A template file (model.yaml `chat_template: PATH`), with the bos/eos tokens of the
  // tokenizer_config.json at `tokenizer_config_path` (none if empty or absent).
  static Result<ChatTemplate> FromFile(const std::string& path,
                                       const std::string& tokenizer_config_path);

  // Renders `messages` (a JSON array of message objects, passed to the template as they are).
  // `tools`: null or an array; `extra`: null or an object of further variables. Errors
  // (INVALID_ARGUMENT) carry the template's raise_exception message or name the line that
  // failed.
  Result<std::string> Render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                             const nlohmann::ordered_json& tools = nullptr,
                             const nlohmann::ordered_json& extra = nullptr) const;

  const std::string& source() const { return source_; }
  const std::string& text() const { return text_; }
  const std::string& bos_token() const { return bos_; }
  const std::string& eos_token() const { return eos_; }

 private:
  struct Parsed;
  ChatTemplate() = default;
  std::string text_, source_, bos_, eos_;
  std::shared_ptr<const Parsed> parsed_;
};

}  // namespace engram
