// The syntax tree of a Jinja template (the subset chat templates use: docs/formats.md
// "Chat templates"), as jinja_parser builds it and jinja_render walks it.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_value.h"

namespace engram::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // value
    kName,     // name
    kAttr,     // a.name
    kItem,     // a[b]
    kSlice,    // a[b:c:d] (args may be null)
    kCall,     // a(args, kwargs)
    kFilter,   // a | name(args, kwargs)
    kTest,     // a is [not] name(args)
    kUnary,    // op a   ("not", "-", "+")
    kBinary,   // a op b ("or", "and", "+", "-", "*", "/", "//", "%", "**", "~", "in", "not in",
               //         "==", "!=", "<", ">", "<=", ">=")
    kCond,     // a if b else c   (args: a, b, c; c may be null)
    kList,     // [args]
    kTuple,    // (args)
    kDict,     // {args[0]: args[1], ...}
  };
  Kind kind;
  int line = 0;
  Value value;           // kLiteral
  std::string name;      // kName, kAttr, kFilter, kTest; the operator for kUnary, kBinary
  bool negated = false;  // kTest
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind {
    kText,   // text
    kEmit,   // {{ expr }}
    kIf,     // branches: (condition, body)...; else_body
    kFor,    // targets in expr [if cond]: body [else else_body]
    kSet,    // targets = expr, or ns.attr = expr (attr set), or a block set (body)
    kMacro,  // name(params=defaults): body
    kBreak,
    kContinue,
    kBlock,  // a body run as is ({% generation %} ... {% endgeneration %})
  };
  Kind kind;
  int line = 0;
  std::string text;                                // kText
  ExprPtr expr;                                    // kEmit, kFor (iterable), kSet (value)
  ExprPtr cond;                                    // kFor filter
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf
  Body body, else_body;
  std::vector<std::string> targets;  // kFor, kSet; kMacro: parameter names
  std::string attr;                  // kSet: ns.attr
  std::string name;                  // kMacro
  std::vector<ExprPtr> defaults;     // kMacro: one per parameter (null: none)
};

}  // namespace engram::jinja
