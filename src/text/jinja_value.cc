#include "text/jinja_value.h"

#include <fmt/format.h>

#include <cmath>

#include "text/utf8.h"

namespace engram::jinja {

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value::Value(bool b) : kind_(Kind::kBool), b_(b) {}
Value::Value(int64_t i) : kind_(Kind::kInt), i_(i) {}
Value::Value(double d) : kind_(Kind::kFloat), d_(d) {}
Value::Value(std::string s) : kind_(Kind::kString), s_(std::move(s)) {}

Value Value::FromList(List l) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<List>(std::move(l));
  return v;
}
Value Value::FromTuple(List l) {
  Value v = FromList(std::move(l));
  v.tuple_ = true;
  return v;
}
Value Value::FromDict(Dict d) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<Dict>(std::move(d));
  return v;
}
Value Value::Namespace(Dict d) {
  Value v = FromDict(std::move(d));
  v.namespace_ = true;
  return v;
}
Value Value::FromFunction(Function f) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.fn_ = std::make_shared<Function>(std::move(f));
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                 ? Value(static_cast<double>(j.get<uint64_t>()))
                 : Value(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(FromJson(e));
      return FromList(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.reserve(j.size());
      for (const auto& [k, e] : j.items()) d.emplace_back(Value(k), FromJson(e));
      return FromDict(std::move(d));
    }
    default:
      return Value();
  }
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b_;
    case Kind::kInt:
      return i_ != 0;
    case Kind::kFloat:
      return d_ != 0;
    case Kind::kString:
      return !s_.empty();
    case Kind::kList:
      return !list_->empty();
    case Kind::kDict:
      return namespace_ || !dict_->empty();
    case Kind::kFunction:
      return true;
  }
  return false;
}

bool Value::Equals(const Value& o) const {
  if (is_number() && o.is_number()) {
    if (kind_ == Kind::kInt && o.kind_ == Kind::kInt) return i_ == o.i_;
    return as_double() == o.as_double();
  }
  if (kind_ == Kind::kBool && o.is_number()) return Value(static_cast<int64_t>(b_)).Equals(o);
  if (is_number() && o.kind_ == Kind::kBool) return Equals(Value(static_cast<int64_t>(o.b_)));
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return b_ == o.b_;
    case Kind::kString:
      return s_ == o.s_;
    case Kind::kList: {
      if (list_->size() != o.list_->size()) return false;
      for (size_t i = 0; i < list_->size(); ++i) {
        if (!(*list_)[i].Equals((*o.list_)[i])) return false;
      }
      return true;
    }
    case Kind::kDict: {
      if (dict_ == o.dict_) return true;
      if (dict_->size() != o.dict_->size()) return false;
      for (const auto& [k, v] : *dict_) {
        const Value ov = o.Get(k);
        if (ov.is_undefined() || !v.Equals(ov)) return false;
      }
      return true;
    }
    case Kind::kFunction:
      return fn_ == o.fn_;
    default:
      return false;
  }
}

std::string PyFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string PyRepr(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(q)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += q;
  return out;
}

std::string Value::Str() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return s_;
    default:
      return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return b_ ? "True" : "False";
    case Kind::kInt:
      return std::to_string(i_);
    case Kind::kFloat:
      return PyFloat(d_);
    case Kind::kString:
      return PyRepr(s_);
    case Kind::kList: {
      std::string out = tuple_ ? "(" : "[";
      for (size_t i = 0; i < list_->size(); ++i) {
        if (i) out += ", ";
        out += (*list_)[i].Repr();
      }
      if (tuple_ && list_->size() == 1) out += ",";
      return out + (tuple_ ? ")" : "]");
    }
    case Kind::kDict: {
      if (namespace_) return "<Namespace>";
      std::string out = "{";
      for (size_t i = 0; i < dict_->size(); ++i) {
        if (i) out += ", ";
        out += (*dict_)[i].first.Repr() + ": " + (*dict_)[i].second.Repr();
      }
      return out + "}";
    }
    case Kind::kFunction:
      return "<function>";
  }
  return "";
}

namespace {

void JsonString(const std::string& s, std::string* out) {
  *out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (c < 0x20) {
          *out += fmt::format("\\u{:04x}", c);
        } else {
          *out += static_cast<char>(c);
        }
    }
  }
  *out += '"';
}

Status Json(const Value& v, int indent, int depth, std::string* out) {
  if (depth > 256) return InvalidArgument("tojson: the value nests deeper than 256 levels");
  // A newline and the indentation of the next level / of this level (empty without indent).
  std::string nl, close_nl;
  if (indent >= 0) {
    nl.push_back('\n');
    nl.append(static_cast<size_t>(indent) * static_cast<size_t>(depth + 1), ' ');
    close_nl.push_back('\n');
    close_nl.append(static_cast<size_t>(indent) * static_cast<size_t>(depth), ' ');
  }
  const char* sep = indent >= 0 ? "," : ", ";
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      *out += "null";
      return Status::Ok();
    case Value::Kind::kBool:
      *out += v.as_bool() ? "true" : "false";
      return Status::Ok();
    case Value::Kind::kInt:
      *out += std::to_string(v.as_int());
      return Status::Ok();
    case Value::Kind::kFloat: {
      const double d = v.as_double();
      *out += std::isnan(d)   ? "NaN"
              : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity")
                              : PyFloat(d);
      return Status::Ok();
    }
    case Value::Kind::kString:
      JsonString(v.str(), out);
      return Status::Ok();
    case Value::Kind::kList: {
      if (v.list().empty()) {
        *out += "[]";
        return Status::Ok();
      }
      *out += "[";
      for (size_t i = 0; i < v.list().size(); ++i) {
        if (i) *out += sep;
        *out += nl;
        ENGRAM_RETURN_IF_ERROR(Json(v.list()[i], indent, depth + 1, out));
      }
      *out += close_nl;
      *out += "]";
      return Status::Ok();
    }
    case Value::Kind::kDict: {
      if (v.dict().empty()) {
        *out += "{}";
        return Status::Ok();
      }
      *out += "{";
      for (size_t i = 0; i < v.dict().size(); ++i) {
        if (i) *out += sep;
        *out += nl;
        const Value& k = v.dict()[i].first;
        if (k.is_string()) {
          JsonString(k.str(), out);
        } else {
          JsonString(k.Str(), out);
        }
        *out += ": ";
        ENGRAM_RETURN_IF_ERROR(Json(v.dict()[i].second, indent, depth + 1, out));
      }
      *out += close_nl;
      *out += "}";
      return Status::Ok();
    }
    case Value::Kind::kFunction:
      return InvalidArgument("tojson: a function is not JSON serializable");
  }
  return Status::Ok();
}

}  // namespace

Result<std::string> Value::ToJson(int indent) const {
  std::string out;
  ENGRAM_RETURN_IF_ERROR(Json(*this, indent, 0, &out));
  return out;
}

Value Value::Get(const Value& key) const {
  if (kind_ != Kind::kDict) return Value();
  for (const auto& [k, v] : *dict_) {
    if (k.Equals(key)) return v;
  }
  return Value();
}

void Value::Set(const Value& key, Value v) const {
  if (kind_ != Kind::kDict) return;
  for (auto& [k, old] : *dict_) {
    if (k.Equals(key)) {
      old = std::move(v);
      return;
    }
  }
  dict_->emplace_back(key, std::move(v));
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return namespace_ ? "Namespace" : "dict";
    case Kind::kFunction:
      return "function";
  }
  return "?";
}

Value CallArgs::Arg(size_t i, const char* name, Value def) const {
  for (const auto& [k, v] : kwargs) {
    if (k == name) return v;
  }
  if (i < args.size()) return args[i];
  return def;
}

std::u32string Utf32(const std::string& s) {
  std::u32string out;
  if (utf8::IsValid(s)) {
    for (size_t pos = 0; pos < s.size();) out.push_back(utf8::Next(s, &pos));
    return out;
  }
  // Only reachable from a caller that skipped validation: decode byte by byte, each byte that
  // does not start a whole sequence becoming U+FFFD, so no read runs past the end.
  for (size_t pos = 0; pos < s.size();) {
    const size_t rest = utf8::FirstInvalid(std::string_view(s).substr(pos));
    if (rest == 0) {
      out.push_back(U'\uFFFD');
      ++pos;
      continue;
    }
    const size_t end = rest == utf8::kValid ? s.size() : pos + rest;
    while (pos < end) out.push_back(utf8::Next(s, &pos));
  }
  return out;
}

std::string Utf8(const std::u32string& s) {
  std::string out;
  for (char32_t c : s) utf8::Append(c, &out);
  return out;
}

}  // namespace engram::jinja
