// Parses Jinja source into a jinja::Body the way Jinja2 does with trim_blocks and
// lstrip_blocks on (transformers' settings): whitespace control (`{%-`, `-%}`, `{{-`, `-}}`,
// `{#- -#}`, `{%+`), comments, raw blocks, and the expression grammar with Jinja's operator
// precedence. Errors are INVALID_ARGUMENT naming `source` and the line. Bounded: nesting
// deeper than 128 levels is an error, not a stack overflow.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "text/jinja_ast.h"

namespace engram::jinja {

Result<Body> Parse(std::string_view text, const std::string& source);

}  // namespace engram::jinja
