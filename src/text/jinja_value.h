// jinja::Value: the values a chat template computes with, with Python's semantics as Jinja2
// has them (truthiness, equality, str() and repr() formatting, insertion-ordered dicts,
// strings indexed by code point), and the conversions to and from JSON that transformers'
// rendering applies (json.dumps(ensure_ascii=False) for `tojson`).
//
// Values are cheap to copy: lists, dicts and namespaces are shared (Jinja's are references
// too; a namespace's attributes are assigned through any copy).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace engram::jinja {

class Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<Value, Value>>;  // insertion order, as Python's dict
struct CallArgs;
using Function = std::function<Result<Value>(CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // undefined
  static Value None();
  Value(bool b);  // NOLINT(google-explicit-constructor): literals read naturally
  Value(int64_t i);
  Value(int i) : Value(static_cast<int64_t>(i)) {}
  Value(double d);
  Value(std::string s);
  Value(const char* s) : Value(std::string(s)) {}
  static Value FromList(List l);
  // A tuple: a list that prints as Python's (a, b) (what items() and dictsort yield).
  static Value FromTuple(List l);
  static Value FromDict(Dict d);
  static Value FromFunction(Function f);
  // A namespace(): a dict whose entries `set ns.x = ...` assigns.
  static Value Namespace(Dict d);
  static Value FromJson(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kDict && namespace_; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return b_; }
  int64_t as_int() const { return i_; }
  double as_double() const { return kind_ == Kind::kInt ? static_cast<double>(i_) : d_; }
  const std::string& str() const { return s_; }
  List& list() const { return *list_; }
  Dict& dict() const { return *dict_; }
  const Function& function() const { return *fn_; }

  bool Truthy() const;
  // Python's ==.
  bool Equals(const Value& o) const;
  // Python's str() (what {{ x }} prints; undefined prints "") and repr().
  std::string Str() const;
  std::string Repr() const;
  // json.dumps(ensure_ascii=False[, indent]); TypeError-like INVALID_ARGUMENT for functions.
  Result<std::string> ToJson(int indent = -1) const;
  // The dict entry `key`, or undefined.
  Value Get(const Value& key) const;
  // Sets a dict (namespace) entry.
  void Set(const Value& key, Value v) const;
  const char* TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;
  bool namespace_ = false;
  bool tuple_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> fn_;
};

// Arguments of a call: positional, then keyword.
struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
  // The positional `i` or keyword `name` argument, else `def`.
  Value Arg(size_t i, const char* name, Value def = Value()) const;
};

// Python's repr of a float (shortest round-trip, "1.0", "1e-05", "inf").
std::string PyFloat(double d);
// Python's string repr ('...' or "..." as Python picks).
std::string PyRepr(const std::string& s);
// Code points of UTF-8 text, and back.
std::u32string Utf32(const std::string& s);
std::string Utf8(const std::u32string& s);

}  // namespace engram::jinja
