// Renders a parsed Jinja template (jinja_parser) with Jinja2's semantics as chat templates
// rely on them: undefined vs none, Python truthiness and formatting, loop scoping (a `set`
// inside a loop stays in it; namespace() attributes do not), `loop.*`, macros, the filters,
// tests, string/dict methods and globals (namespace, range, raise_exception, strftime_now)
// that real templates use (docs/formats.md "Chat templates" lists them).
//
// Bounded for hostile templates: output, call depth and work (statements and loop
// iterations) are limited, and a template that exceeds a limit fails with INVALID_ARGUMENT
// naming it, as does every other runtime error (an undefined variable's attribute, a wrong
// operand type, raise_exception's message).
#pragma once

#include <string>

#include "common/status.h"
#include "text/jinja_ast.h"
#include "text/jinja_value.h"

namespace engram::jinja {

struct RenderLimits {
  size_t max_output_bytes = 16 << 20;
  int max_call_depth = 64;
  int64_t max_steps = 2'000'000;  // statements run, loop iterations, range() elements
};

// `vars`: the template's variables (a dict Value). `source` names the template in errors.
Result<std::string> Render(const Body& body, const Value& vars, const std::string& source,
                           const RenderLimits& limits = {});

}  // namespace engram::jinja
