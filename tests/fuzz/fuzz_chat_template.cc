// Fuzzes the chat-template engine (src/text/jinja_*, ChatTemplate): any input is parsed as a
// Jinja template and, when it parses, rendered on a small conversation with tools. Errors are
// fine; a crash, a hang past the render limits or a leak is a finding. Seeds: the real
// templates of the tokenizer fixtures.
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "text/chat_template.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engram::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json kMessages = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "héllo 👋"},
    {"role": "assistant", "content": null, "tool_calls": [{"type": "function",
      "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
    {"role": "tool", "content": "42"},
    {"role": "user", "content": [{"type": "text", "text": "part"}]}])");
  static const nlohmann::ordered_json kTools = nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])");
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto t = engram::ChatTemplate::Parse(text, "fuzz.jinja", "<s>", "</s>");
  engram::fuzz::Note("Parse", t.status());
  if (!t.ok()) return 0;
  auto r = t->Render(kMessages, true, kTools, nlohmann::ordered_json{{"enable_thinking", false}});
  engram::fuzz::Note("Render", r.status());
  return 0;
}
