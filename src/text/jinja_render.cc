#include "text/jinja_render.h"

#include <fmt/format.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <map>

namespace engram::jinja {
namespace {

enum class Flow { kNormal, kBreak, kContinue };

bool IsSpace(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == 0x1c ||
         c == 0x1d || c == 0x1e || c == 0x1f || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

// Python's str.strip / lstrip / rstrip.
std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  const std::u32string u = Utf32(s);
  const std::u32string set = chars.is_string() ? Utf32(chars.str()) : std::u32string();
  auto strip = [&](char32_t c) {
    return chars.is_string() ? set.find(c) != std::u32string::npos : IsSpace(c);
  };
  size_t a = 0, b = u.size();
  if (left) {
    while (a < b && strip(u[a])) ++a;
  }
  if (right) {
    while (b > a && strip(u[b - 1])) --b;
  }
  return Utf8(u.substr(a, b - a));
}

class Renderer {
 public:
  Renderer(const std::string& source, const RenderLimits& limits)
      : source_(source), limits_(limits) {}

  Status Run(const Body& body, const Value& vars, std::string* out) {
    scopes_.emplace_back();
    AddGlobals();
    if (vars.is_dict()) {
      for (const auto& [k, v] : vars.dict()) scopes_.back()[k.Str()] = v;
    }
    scopes_.emplace_back();  // the template's own
    out_ = out;
    Flow f;
    return Exec(body, &f);
  }

 private:
  using Scope = std::map<std::string, Value>;

  template <typename... Args>
  Status Err(int line, fmt::format_string<Args...> f, Args&&... args) const {
    return InvalidArgument("{}: line {}: {}", source_, line,
                           fmt::format(f, std::forward<Args>(args)...));
  }
  Status Step(int line) {
    if (++steps_ > limits_.max_steps) {
      return Err(line, "the template ran more than {} steps (a runaway loop?)", limits_.max_steps);
    }
    return Status::Ok();
  }
  Status Emit(const std::string& s, int line) {
    if (out_->size() + s.size() > limits_.max_output_bytes) {
      return Err(line, "the output passed {} bytes", limits_.max_output_bytes);
    }
    *out_ += s;
    return Status::Ok();
  }
  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value();
  }

  void AddGlobals() {
    Scope& g = scopes_.front();
    g["namespace"] = Value::FromFunction([](CallArgs& a) -> Result<Value> {
      Dict d;
      if (!a.args.empty() && a.args[0].is_dict()) d = a.args[0].dict();
      for (auto& [k, v] : a.kwargs) d.emplace_back(Value(k), v);
      return Value::Namespace(std::move(d));
    });
    g["dict"] = Value::FromFunction([](CallArgs& a) -> Result<Value> {
      Dict d;
      for (auto& [k, v] : a.kwargs) d.emplace_back(Value(k), v);
      return Value::FromDict(std::move(d));
    });
    g["raise_exception"] = Value::FromFunction([](CallArgs& a) -> Result<Value> {
      return InvalidArgument("{}", a.Arg(0, "message").Str());
    });
    g["strftime_now"] = Value::FromFunction([](CallArgs& a) -> Result<Value> {
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, a.Arg(0, "format").Str().c_str(), &tm);
      return Value(std::string(buf, n));
    });
    g["range"] = Value::FromFunction([this](CallArgs& a) -> Result<Value> {
      int64_t start = 0, stop = 0, step = 1;
      for (const Value& v : a.args) {
        if (v.kind() != Value::Kind::kInt) return InvalidArgument("range() takes integers");
      }
      if (a.args.size() == 1) {
        stop = a.args[0].as_int();
      } else if (a.args.size() >= 2) {
        start = a.args[0].as_int();
        stop = a.args[1].as_int();
        if (a.args.size() >= 3) step = a.args[2].as_int();
      }
      if (step == 0) return InvalidArgument("range() step must not be zero");
      List l;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (++steps_ > limits_.max_steps) {
          return InvalidArgument("range(): the template ran more than {} steps (a runaway loop?)",
                                 limits_.max_steps);
        }
        l.emplace_back(i);
      }
      return Value::FromList(std::move(l));
    });
  }

  // ---- statements ----

  Status Exec(const Body& body, Flow* flow) {
    *flow = Flow::kNormal;
    for (const auto& st : body) {
      ENGRAM_RETURN_IF_ERROR(Step(st->line));
      ENGRAM_RETURN_IF_ERROR(ExecOne(*st, flow));
      if (*flow != Flow::kNormal) return Status::Ok();
    }
    return Status::Ok();
  }

  Status Assign(const std::string& name, Value v) {
    scopes_.back()[name] = std::move(v);
    return Status::Ok();
  }

  Status Unpack(const std::vector<std::string>& targets, const Value& v, int line) {
    if (targets.size() == 1) return Assign(targets[0], v);
    List items;
    if (v.is_list()) {
      items = v.list();
    } else if (v.is_string()) {
      for (char32_t c : Utf32(v.str())) items.emplace_back(Utf8(std::u32string(1, c)));
    } else {
      return Err(line, "cannot unpack a {} into {} names", v.TypeName(), targets.size());
    }
    if (items.size() != targets.size()) {
      return Err(line, "cannot unpack {} values into {} names", items.size(), targets.size());
    }
    for (size_t i = 0; i < targets.size(); ++i)
      ENGRAM_RETURN_IF_ERROR(Assign(targets[i], items[i]));
    return Status::Ok();
  }

  Status ExecOne(const Stmt& st, Flow* flow) {
    switch (st.kind) {
      case Stmt::Kind::kText:
        return Emit(st.text, st.line);
      case Stmt::Kind::kEmit: {
        ENGRAM_ASSIGN_OR_RETURN(Value v, Eval(*st.expr));
        return Emit(v.Str(), st.line);
      }
      case Stmt::Kind::kIf:
        for (const auto& [cond, body] : st.branches) {
          ENGRAM_ASSIGN_OR_RETURN(Value c, Eval(*cond));
          if (c.Truthy()) return Exec(body, flow);
        }
        return Exec(st.else_body, flow);
      case Stmt::Kind::kFor:
        return ExecFor(st, flow);
      case Stmt::Kind::kSet: {
        Value v;
        if (st.expr) {
          ENGRAM_ASSIGN_OR_RETURN(v, Eval(*st.expr));
        } else {
          std::string captured;
          std::string* saved = out_;
          out_ = &captured;
          Flow f;
          Status s = Exec(st.body, &f);
          out_ = saved;
          ENGRAM_RETURN_IF_ERROR(s);
          v = Value(std::move(captured));
        }
        if (!st.attr.empty()) {
          const Value ns = Lookup(st.targets[0]);
          if (!ns.is_namespace()) {
            return Err(st.line, "cannot assign the attribute '{}' of {} (only of a namespace())",
                       st.attr, st.targets[0]);
          }
          ns.Set(Value(st.attr), std::move(v));
          return Status::Ok();
        }
        return Unpack(st.targets, v, st.line);
      }
      case Stmt::Kind::kMacro:
        return Assign(st.name, MakeMacro(st));
      case Stmt::Kind::kBreak:
        *flow = Flow::kBreak;
        return Status::Ok();
      case Stmt::Kind::kContinue:
        *flow = Flow::kContinue;
        return Status::Ok();
      case Stmt::Kind::kBlock:
        return Exec(st.body, flow);
    }
    return Status::Ok();
  }

  Status ExecFor(const Stmt& st, Flow* flow) {
    ENGRAM_ASSIGN_OR_RETURN(Value seq, Eval(*st.expr));
    List items;
    if (seq.is_list()) {
      items = seq.list();
    } else if (seq.is_dict()) {
      for (const auto& [k, v] : seq.dict()) items.push_back(k);
    } else if (seq.is_string()) {
      for (char32_t c : Utf32(seq.str())) items.emplace_back(Utf8(std::u32string(1, c)));
    } else if (!seq.is_undefined() && !seq.is_none()) {
      return Err(st.line, "a {} is not iterable", seq.TypeName());
    } else if (seq.is_none()) {
      return Err(st.line, "'NoneType' object is not iterable");
    }
    if (st.cond) {  // {% for x in y if cond %}: filtered before loop.* counts
      List kept;
      for (const Value& it : items) {
        scopes_.emplace_back();
        Status s = Unpack(st.targets, it, st.line);
        Result<Value> c = s.ok() ? Eval(*st.cond) : Result<Value>(s);
        scopes_.pop_back();
        if (!c.ok()) return c.status();
        if (c->Truthy()) kept.push_back(it);
      }
      items = std::move(kept);
    }
    if (items.empty()) return Exec(st.else_body, flow);
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      ENGRAM_RETURN_IF_ERROR(Step(st.line));
      scopes_.emplace_back();
      Dict loop = {{Value("index"), Value(i + 1)},
                   {Value("index0"), Value(i)},
                   {Value("revindex"), Value(n - i)},
                   {Value("revindex0"), Value(n - i - 1)},
                   {Value("first"), Value(i == 0)},
                   {Value("last"), Value(i == n - 1)},
                   {Value("length"), Value(n)},
                   {Value("depth"), Value(int64_t{1})},
                   {Value("depth0"), Value(int64_t{0})},
                   {Value("previtem"), i > 0 ? items[i - 1] : Value()},
                   {Value("nextitem"), i + 1 < n ? items[i + 1] : Value()}};
      const int64_t idx = i;
      loop.emplace_back(Value("cycle"), Value::FromFunction([idx](CallArgs& a) -> Result<Value> {
                          if (a.args.empty()) return InvalidArgument("loop.cycle() needs values");
                          return a.args[static_cast<size_t>(idx) % a.args.size()];
                        }));
      scopes_.back()["loop"] = Value::FromDict(std::move(loop));
      Status s = Unpack(st.targets, items[static_cast<size_t>(i)], st.line);
      Flow f = Flow::kNormal;
      if (s.ok()) s = Exec(st.body, &f);
      scopes_.pop_back();
      ENGRAM_RETURN_IF_ERROR(s);
      if (f == Flow::kBreak) break;
    }
    return Status::Ok();
  }

  Value MakeMacro(const Stmt& st) {
    const Stmt* m = &st;
    return Value::FromFunction([this, m](CallArgs& a) -> Result<Value> {
      if (++depth_ > limits_.max_call_depth) {
        --depth_;
        return InvalidArgument("macro {} calls nest deeper than {}", m->name,
                               limits_.max_call_depth);
      }
      scopes_.emplace_back();
      Status s = Status::Ok();
      for (size_t i = 0; i < m->targets.size() && s.ok(); ++i) {
        Value v = a.Arg(i, m->targets[i].c_str());
        if (v.is_undefined() && m->defaults[i]) {
          auto d = Eval(*m->defaults[i]);
          if (!d.ok()) {
            s = d.status();
            break;
          }
          v = *d;
        }
        scopes_.back()[m->targets[i]] = v;
      }
      std::string captured;
      std::string* saved = out_;
      out_ = &captured;
      Flow f;
      if (s.ok()) s = Exec(m->body, &f);
      out_ = saved;
      scopes_.pop_back();
      --depth_;
      ENGRAM_RETURN_IF_ERROR(s);
      return Value(std::move(captured));
    });
  }

  // ---- expressions ----

  Result<Value> Eval(const Expr& e) {
    if (++eval_depth_ > 512) {
      --eval_depth_;
      return Err(e.line, "the expression nests too deeply");
    }
    Result<Value> r = EvalInner(e);
    --eval_depth_;
    return r;
  }

  Result<Value> EvalInner(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kLiteral:
        return e.value;
      case Expr::Kind::kName:
        return Lookup(e.name);
      case Expr::Kind::kAttr: {
        ENGRAM_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        if (obj.is_undefined()) {
          return Err(e.line, "'{}' is undefined (reading its attribute '{}')", Describe(*e.args[0]),
                     e.name);
        }
        return GetAttr(obj, e.name, true);
      }
      case Expr::Kind::kItem: {
        ENGRAM_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        ENGRAM_ASSIGN_OR_RETURN(Value key, Eval(*e.args[1]));
        if (obj.is_undefined()) {
          return Err(e.line, "'{}' is undefined (reading the item {})", Describe(*e.args[0]),
                     key.Repr());
        }
        return GetItem(obj, key);
      }
      case Expr::Kind::kSlice: {
        ENGRAM_ASSIGN_OR_RETURN(Value obj, Eval(*e.args[0]));
        Value parts[3];
        for (int k = 0; k < 3; ++k) {
          if (e.args[static_cast<size_t>(k) + 1]) {
            ENGRAM_ASSIGN_OR_RETURN(parts[k], Eval(*e.args[static_cast<size_t>(k) + 1]));
          }
        }
        return Slice(obj, parts, e.line);
      }
      case Expr::Kind::kCall: {
        ENGRAM_ASSIGN_OR_RETURN(Value fn, Eval(*e.args[0]));
        if (!fn.is_function()) {
          return Err(e.line, "'{}' is {}, not callable", Describe(*e.args[0]), fn.TypeName());
        }
        CallArgs a;
        for (size_t i = 1; i < e.args.size(); ++i) {
          ENGRAM_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
          a.args.push_back(std::move(v));
        }
        for (const auto& [k, x] : e.kwargs) {
          ENGRAM_ASSIGN_OR_RETURN(Value v, Eval(*x));
          a.kwargs.emplace_back(k, std::move(v));
        }
        auto r = fn.function()(a);
        if (!r.ok()) return Err(e.line, "{}", r.status().message());
        return r;
      }
      case Expr::Kind::kFilter:
        return ApplyFilter(e);
      case Expr::Kind::kTest: {
        ENGRAM_ASSIGN_OR_RETURN(bool t, ApplyTest(e));
        return Value(e.negated ? !t : t);
      }
      case Expr::Kind::kUnary: {
        ENGRAM_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
        if (e.name == "not") return Value(!v.Truthy());
        if (!v.is_number()) return Err(e.line, "unary {} of a {}", e.name, v.TypeName());
        if (e.name == "-") {
          return v.kind() == Value::Kind::kInt ? Value(-v.as_int()) : Value(-v.as_double());
        }
        return v;
      }
      case Expr::Kind::kBinary:
        return Binary(e);
      case Expr::Kind::kCond: {
        ENGRAM_ASSIGN_OR_RETURN(Value c, Eval(*e.args[1]));
        if (c.Truthy()) return Eval(*e.args[0]);
        if (e.args[2]) return Eval(*e.args[2]);
        return Value();
      }
      case Expr::Kind::kList:
      case Expr::Kind::kTuple: {
        List l;
        for (const auto& a : e.args) {
          ENGRAM_ASSIGN_OR_RETURN(Value v, Eval(*a));
          l.push_back(std::move(v));
        }
        return e.kind == Expr::Kind::kTuple ? Value::FromTuple(std::move(l))
                                            : Value::FromList(std::move(l));
      }
      case Expr::Kind::kDict: {
        Value d = Value::FromDict({});
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          ENGRAM_ASSIGN_OR_RETURN(Value k, Eval(*e.args[i]));
          ENGRAM_ASSIGN_OR_RETURN(Value v, Eval(*e.args[i + 1]));
          d.Set(k, std::move(v));
        }
        return d;
      }
    }
    return Value();
  }

  static std::string Describe(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::kName:
        return e.name;
      case Expr::Kind::kAttr:
        return Describe(*e.args[0]) + "." + e.name;
      case Expr::Kind::kItem:
        return Describe(*e.args[0]) + "[" +
               (e.args[1]->kind == Expr::Kind::kLiteral ? e.args[1]->value.Repr() : "...") + "]";
      default:
        return "expression";
    }
  }

  Result<Value> GetAttr(const Value& obj, const std::string& name, bool attr_first) {
    if (obj.is_dict()) {
      if (!attr_first || obj.is_namespace()) {
        Value v = obj.Get(Value(name));
        if (!v.is_undefined()) return v;
      }
      Value m = DictMethod(obj, name);
      if (!m.is_undefined()) return m;
      return obj.Get(Value(name));
    }
    if (obj.is_string()) return StringMethod(obj, name);
    return Value();
  }

  Result<Value> GetItem(const Value& obj, const Value& key) {
    if (obj.is_dict()) {
      Value v = obj.Get(key);
      if (!v.is_undefined() || !key.is_string()) return v;
      return GetAttr(obj, key.str(), false);
    }
    if ((obj.is_list() || obj.is_string()) && key.kind() == Value::Kind::kInt) {
      if (obj.is_list()) {
        const int64_t n = static_cast<int64_t>(obj.list().size());
        int64_t i = key.as_int();
        if (i < 0) i += n;
        if (i < 0 || i >= n) return Value();
        return obj.list()[static_cast<size_t>(i)];
      }
      const std::u32string u = Utf32(obj.str());
      const int64_t n = static_cast<int64_t>(u.size());
      int64_t i = key.as_int();
      if (i < 0) i += n;
      if (i < 0 || i >= n) return Value();
      return Value(Utf8(u.substr(static_cast<size_t>(i), 1)));
    }
    if (key.is_string()) return GetAttr(obj, key.str(), false);
    return Value();
  }

  Result<Value> Slice(const Value& obj, const Value parts[3], int line) {
    for (int k = 0; k < 3; ++k) {
      if (!parts[k].is_undefined() && !parts[k].is_none() && parts[k].kind() != Value::Kind::kInt) {
        return Err(line, "slice indices must be integers");
      }
    }
    const bool is_list = obj.is_list();
    if (!is_list && !obj.is_string()) {
      return Err(line, "a {} cannot be sliced", obj.TypeName());
    }
    const std::u32string u = is_list ? std::u32string() : Utf32(obj.str());
    const int64_t n =
        is_list ? static_cast<int64_t>(obj.list().size()) : static_cast<int64_t>(u.size());
    auto has = [&](int k) { return parts[k].kind() == Value::Kind::kInt; };
    const int64_t step = has(2) ? parts[2].as_int() : 1;
    if (step == 0) return Err(line, "slice step cannot be zero");
    auto clamp = [&](int64_t v, bool is_start) {
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      (void)is_start;
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    int64_t start = has(0) ? clamp(parts[0].as_int(), true) : (step > 0 ? 0 : n - 1);
    int64_t stop = has(1) ? clamp(parts[1].as_int(), false) : (step > 0 ? n : -1);
    List l;
    std::u32string s;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (is_list) {
        l.push_back(obj.list()[static_cast<size_t>(i)]);
      } else {
        s.push_back(u[static_cast<size_t>(i)]);
      }
    }
    return is_list ? Value::FromList(std::move(l)) : Value(Utf8(s));
  }

  Value DictMethod(const Value& obj, const std::string& name) {
    if (name == "items") {
      return Value::FromFunction([obj](CallArgs&) -> Result<Value> {
        List l;
        for (const auto& [k, v] : obj.dict()) l.push_back(Value::FromTuple({k, v}));
        return Value::FromList(std::move(l));
      });
    }
    if (name == "keys" || name == "values") {
      const bool keys = name == "keys";
      return Value::FromFunction([obj, keys](CallArgs&) -> Result<Value> {
        List l;
        for (const auto& [k, v] : obj.dict()) l.push_back(keys ? k : v);
        return Value::FromList(std::move(l));
      });
    }
    if (name == "get") {
      return Value::FromFunction([obj](CallArgs& a) -> Result<Value> {
        Value v = obj.Get(a.Arg(0, "key"));
        return v.is_undefined() ? a.Arg(1, "default", Value::None()) : v;
      });
    }
    return Value();
  }

  Value StringMethod(const Value& obj, const std::string& name) {
    const std::string s = obj.str();
    auto fn = [](Function f) { return Value::FromFunction(std::move(f)); };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const bool l = name != "rstrip", r = name != "lstrip";
      return fn([s, l, r](CallArgs& a) -> Result<Value> {
        return Value(Strip(s, a.Arg(0, "chars"), l, r));
      });
    }
    if (name == "startswith" || name == "endswith") {
      const bool start = name == "startswith";
      return fn([s, start](CallArgs& a) -> Result<Value> {
        const Value p = a.Arg(0, "prefix");
        List options = p.is_list() ? p.list() : List{p};
        for (const Value& o : options) {
          if (!o.is_string()) return InvalidArgument("startswith/endswith take strings");
          const std::string& x = o.str();
          if (x.size() <= s.size() && (start ? s.compare(0, x.size(), x) == 0
                                             : s.compare(s.size() - x.size(), x.size(), x) == 0)) {
            return Value(true);
          }
        }
        return Value(false);
      });
    }
    if (name == "split" || name == "rsplit") {
      return fn([s](CallArgs& a) -> Result<Value> {
        const Value sep = a.Arg(0, "sep", Value::None());
        const Value maxv = a.Arg(1, "maxsplit", Value(int64_t{-1}));
        int64_t maxsplit = maxv.kind() == Value::Kind::kInt ? maxv.as_int() : -1;
        List out;
        if (sep.is_none() || sep.is_undefined()) {
          const std::u32string u = Utf32(s);
          size_t i = 0;
          while (i < u.size()) {
            while (i < u.size() && IsSpace(u[i])) ++i;
            if (i >= u.size()) break;
            if (maxsplit == 0) {
              std::u32string rest = u.substr(i);
              while (!rest.empty() && IsSpace(rest.back())) rest.pop_back();
              out.emplace_back(Utf8(rest));
              break;
            }
            size_t j = i;
            while (j < u.size() && !IsSpace(u[j])) ++j;
            out.emplace_back(Utf8(u.substr(i, j - i)));
            --maxsplit;
            i = j;
          }
          return Value::FromList(std::move(out));
        }
        if (!sep.is_string() || sep.str().empty()) return InvalidArgument("split: empty separator");
        size_t pos = 0;
        while (true) {
          const size_t f = maxsplit == 0 ? std::string::npos : s.find(sep.str(), pos);
          if (f == std::string::npos) {
            out.emplace_back(s.substr(pos));
            break;
          }
          out.emplace_back(s.substr(pos, f - pos));
          pos = f + sep.str().size();
          if (maxsplit > 0) --maxsplit;
        }
        return Value::FromList(std::move(out));
      });
    }
    if (name == "upper" || name == "lower") {
      const bool up = name == "upper";
      return fn([s, up](CallArgs&) -> Result<Value> { return Value(Case(s, up)); });
    }
    if (name == "replace") {
      return fn([s](CallArgs& a) -> Result<Value> {
        const Value from = a.Arg(0, "old"), to = a.Arg(1, "new");
        if (!from.is_string() || !to.is_string()) return InvalidArgument("replace takes strings");
        return Value(Replace(s, from.str(), to.str()));
      });
    }
    if (name == "find") {
      return fn([s](CallArgs& a) -> Result<Value> {
        const Value x = a.Arg(0, "sub");
        if (!x.is_string()) return InvalidArgument("find takes a string");
        const size_t f = s.find(x.str());
        if (f == std::string::npos) return Value(int64_t{-1});
        return Value(static_cast<int64_t>(Utf32(s.substr(0, f)).size()));
      });
    }
    if (name == "count") {
      return fn([s](CallArgs& a) -> Result<Value> {
        const Value x = a.Arg(0, "sub");
        if (!x.is_string() || x.str().empty()) return InvalidArgument("count takes a string");
        int64_t n = 0;
        for (size_t p = s.find(x.str()); p != std::string::npos;
             p = s.find(x.str(), p + x.str().size()))
          ++n;
        return Value(n);
      });
    }
    if (name == "title" || name == "capitalize") {
      const bool title = name == "title";
      return fn([s, title](CallArgs&) -> Result<Value> { return Value(Title(s, title)); });
    }
    if (name == "join") {
      return fn([s](CallArgs& a) -> Result<Value> {
        const Value l = a.Arg(0, "iterable");
        if (!l.is_list()) return InvalidArgument("join takes a list");
        std::string o;
        for (size_t i = 0; i < l.list().size(); ++i) {
          if (i) o += s;
          o += l.list()[i].Str();
        }
        return Value(o);
      });
    }
    return Value();
  }

  static std::string Replace(const std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) {
      std::string o = to;
      for (char32_t c : Utf32(s)) o += Utf8(std::u32string(1, c)) + to;
      return o;
    }
    std::string o;
    size_t pos = 0;
    for (size_t f = s.find(from); f != std::string::npos; f = s.find(from, pos)) {
      o += s.substr(pos, f - pos) + to;
      pos = f + from.size();
    }
    return o + s.substr(pos);
  }

  // Python's str.title() (every_word) or str.capitalize(), by Unicode code point: a word
  // starts after an uncased character.
  static std::string Title(const std::string& s, bool every_word) {
    std::u32string u = Utf32(s);
    bool prev_cased = false;
    for (size_t i = 0; i < u.size(); ++i) {
      const UChar32 c = static_cast<UChar32>(u[i]);
      const bool cased = u_hasBinaryProperty(c, UCHAR_CASED);
      if (every_word) {
        u[i] = static_cast<char32_t>(cased ? (prev_cased ? u_tolower(c) : u_totitle(c)) : c);
        prev_cased = cased;
      } else {
        u[i] = static_cast<char32_t>(i == 0 ? u_totitle(c) : u_tolower(c));
      }
    }
    return Utf8(u);
  }
  static std::string Case(const std::string& s, bool upper) {
    std::u32string u = Utf32(s);
    for (char32_t& c : u) {
      c = static_cast<char32_t>(upper ? u_toupper(static_cast<UChar32>(c))
                                      : u_tolower(static_cast<UChar32>(c)));
    }
    return Utf8(u);
  }

  Result<Value> Binary(const Expr& e) {
    const std::string& op = e.name;
    ENGRAM_ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
    if (op == "and") return a.Truthy() ? Eval(*e.args[1]) : a;
    if (op == "or") return a.Truthy() ? a : Eval(*e.args[1]);
    ENGRAM_ASSIGN_OR_RETURN(Value b, Eval(*e.args[1]));
    if (op == "~") return Value(a.Str() + b.Str());
    if (op == "==") return Value(a.Equals(b));
    if (op == "!=") return Value(!a.Equals(b));
    if (op == "in" || op == "not in") {
      ENGRAM_ASSIGN_OR_RETURN(bool in, Contains(b, a, e.line));
      return Value(op == "in" ? in : !in);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c = 0;
      if (a.is_number() && b.is_number()) {
        c = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double() ? 1 : 0;
      } else if (a.is_string() && b.is_string()) {
        c = a.str() < b.str() ? -1 : a.str() > b.str() ? 1 : 0;
      } else {
        return Err(e.line, "'{}' is not supported between a {} and a {}", op, a.TypeName(),
                   b.TypeName());
      }
      return Value(op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0);
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
      if (a.is_list() && b.is_list()) {
        List l = a.list();
        l.insert(l.end(), b.list().begin(), b.list().end());
        return Value::FromList(std::move(l));
      }
    }
    if (op == "*" && (a.is_string() || a.is_list()) && b.kind() == Value::Kind::kInt) {
      if (b.as_int() * static_cast<int64_t>(a.is_string() ? a.str().size() : a.list().size()) >
          static_cast<int64_t>(limits_.max_output_bytes)) {
        return Err(e.line, "a repetition larger than the output limit");
      }
      if (a.is_string()) {
        std::string o;
        for (int64_t i = 0; i < b.as_int(); ++i) o += a.str();
        return Value(o);
      }
      List l;
      for (int64_t i = 0; i < b.as_int(); ++i) l.insert(l.end(), a.list().begin(), a.list().end());
      return Value::FromList(std::move(l));
    }
    auto num = [](const Value& v) { return v.is_number() || v.kind() == Value::Kind::kBool; };
    if (!num(a) || !num(b)) {
      return Err(e.line, "unsupported operand types for {}: {} and {}", op, a.TypeName(),
                 b.TypeName());
    }
    const bool ints = a.kind() != Value::Kind::kFloat && b.kind() != Value::Kind::kFloat;
    const int64_t ai = a.kind() == Value::Kind::kBool ? a.as_bool() : a.as_int();
    const int64_t bi = b.kind() == Value::Kind::kBool ? b.as_bool() : b.as_int();
    const double ad = a.kind() == Value::Kind::kBool ? ai : a.as_double();
    const double bd = b.kind() == Value::Kind::kBool ? bi : b.as_double();
    if (op == "+") return ints ? Value(ai + bi) : Value(ad + bd);
    if (op == "-") return ints ? Value(ai - bi) : Value(ad - bd);
    if (op == "*") return ints ? Value(ai * bi) : Value(ad * bd);
    if (op == "/") {
      if (bd == 0) return Err(e.line, "division by zero");
      return Value(ad / bd);
    }
    if (op == "//" || op == "%") {
      if (bd == 0) return Err(e.line, "division by zero");
      if (ints) {
        int64_t q = ai / bi, r = ai % bi;
        if (r != 0 && ((r < 0) != (bi < 0))) {
          --q;
          r += bi;
        }
        return op == "//" ? Value(q) : Value(r);
      }
      const double q = std::floor(ad / bd);
      return op == "//" ? Value(q) : Value(ad - q * bd);
    }
    if (op == "**") {
      if (ints && bi >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < bi && i < 64; ++i) r *= ai;
        return Value(r);
      }
      return Value(std::pow(ad, bd));
    }
    return Err(e.line, "unknown operator {}", op);
  }

  Result<bool> Contains(const Value& container, const Value& x, int line) {
    if (container.is_string()) {
      if (!x.is_string()) return Err(line, "'in <string>' needs a string on the left");
      return container.str().find(x.str()) != std::string::npos;
    }
    if (container.is_list()) {
      for (const Value& v : container.list()) {
        if (v.Equals(x)) return true;
      }
      return false;
    }
    if (container.is_dict()) return !container.Get(x).is_undefined();
    if (container.is_undefined()) return false;
    return Err(line, "'in' of a {}", container.TypeName());
  }

  Result<bool> ApplyTest(const Expr& e) {
    const std::string& n = e.name;
    ENGRAM_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
    std::vector<Value> args;
    for (size_t i = 1; i < e.args.size(); ++i) {
      ENGRAM_ASSIGN_OR_RETURN(Value a, Eval(*e.args[i]));
      args.push_back(std::move(a));
    }
    auto arg = [&](size_t i) { return i < args.size() ? args[i] : Value(); };
    if (n == "defined") return !v.is_undefined();
    if (n == "undefined") return v.is_undefined();
    if (n == "none") return v.is_none();
    if (n == "boolean") return v.kind() == Value::Kind::kBool;
    if (n == "true") return v.kind() == Value::Kind::kBool && v.as_bool();
    if (n == "false") return v.kind() == Value::Kind::kBool && !v.as_bool();
    if (n == "integer") return v.kind() == Value::Kind::kInt;
    if (n == "float") return v.kind() == Value::Kind::kFloat;
    if (n == "number") return v.is_number();
    if (n == "string") return v.is_string();
    if (n == "mapping") return v.is_dict();
    if (n == "iterable") return v.is_list() || v.is_dict() || v.is_string();
    if (n == "sequence") return v.is_list() || v.is_dict() || v.is_string();
    if (n == "callable") return v.is_function();
    if (n == "odd" || n == "even") {
      if (v.kind() != Value::Kind::kInt) return Err(e.line, "'{}' of a {}", n, v.TypeName());
      return (v.as_int() % 2 != 0) == (n == "odd");
    }
    if (n == "divisibleby") {
      if (v.kind() != Value::Kind::kInt || arg(0).kind() != Value::Kind::kInt ||
          arg(0).as_int() == 0) {
        return Err(e.line, "divisibleby needs integers");
      }
      return v.as_int() % arg(0).as_int() == 0;
    }
    if (n == "eq" || n == "equalto" || n == "sameas") return v.Equals(arg(0));
    if (n == "ne") return !v.Equals(arg(0));
    if (n == "in") {
      ENGRAM_ASSIGN_OR_RETURN(bool in, Contains(arg(0), v, e.line));
      return in;
    }
    if (n == "lower" || n == "upper") {
      if (!v.is_string()) return false;
      for (char c : v.str()) {
        const unsigned char u = static_cast<unsigned char>(c);
        if (n == "lower" ? std::isupper(u) : std::islower(u)) return false;
      }
      return true;
    }
    if (n == "gt" || n == "lt" || n == "ge" || n == "le") {
      if (!v.is_number() || !arg(0).is_number()) return Err(e.line, "'{}' needs numbers", n);
      const double a = v.as_double(), b = arg(0).as_double();
      return n == "gt" ? a > b : n == "lt" ? a < b : n == "ge" ? a >= b : a <= b;
    }
    return Err(e.line, "unknown test '{}'", n);
  }

  Result<Value> ApplyFilter(const Expr& e) {
    const std::string& n = e.name;
    ENGRAM_ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
    CallArgs a;
    for (size_t i = 1; i < e.args.size(); ++i) {
      ENGRAM_ASSIGN_OR_RETURN(Value x, Eval(*e.args[i]));
      a.args.push_back(std::move(x));
    }
    for (const auto& [k, x] : e.kwargs) {
      ENGRAM_ASSIGN_OR_RETURN(Value y, Eval(*x));
      a.kwargs.emplace_back(k, std::move(y));
    }
    auto need_string = [&]() -> Status {
      if (v.is_undefined()) return Status::Ok();
      return Status::Ok();
    };
    (void)need_string;
    if (n == "trim") return Value(Strip(v.Str(), a.Arg(0, "chars"), true, true));
    if (n == "tojson") {
      const Value indent = a.Arg(0, "indent");
      auto j =
          v.ToJson(indent.kind() == Value::Kind::kInt ? static_cast<int>(indent.as_int()) : -1);
      if (!j.ok()) return Err(e.line, "{}", j.status().message());
      return Value(*j);
    }
    if (n == "length" || n == "count") {
      if (v.is_string()) return Value(static_cast<int64_t>(Utf32(v.str()).size()));
      if (v.is_list()) return Value(static_cast<int64_t>(v.list().size()));
      if (v.is_dict()) return Value(static_cast<int64_t>(v.dict().size()));
      if (v.is_undefined()) return Value(int64_t{0});
      return Err(e.line, "length of a {}", v.TypeName());
    }
    if (n == "default" || n == "d") {
      const bool boolean = a.Arg(1, "boolean", Value(false)).Truthy();
      if (v.is_undefined() || (boolean && !v.Truthy())) return a.Arg(0, "default_value", Value(""));
      return v;
    }
    if (n == "string") return Value(v.Str());
    if (n == "upper" || n == "lower" || n == "title" || n == "capitalize") {
      if (n == "title" || n == "capitalize") return Value(Title(v.Str(), n == "title"));
      return Value(Case(v.Str(), n == "upper"));
    }
    if (n == "replace") {
      const Value from = a.Arg(0, "old"), to = a.Arg(1, "new");
      return Value(Replace(v.Str(), from.Str(), to.Str()));
    }
    if (n == "safe" || n == "e" || n == "escape" || n == "forceescape") {
      if (n == "safe") return v;
      std::string o;
      for (char c : v.Str()) {
        switch (c) {
          case '&':
            o += "&amp;";
            break;
          case '<':
            o += "&lt;";
            break;
          case '>':
            o += "&gt;";
            break;
          case '"':
            o += "&#34;";
            break;
          case '\'':
            o += "&#39;";
            break;
          default:
            o += c;
        }
      }
      return Value(o);
    }
    if (n == "first" || n == "last") {
      if (v.is_list()) {
        if (v.list().empty()) return Value();
        return n == "first" ? v.list().front() : v.list().back();
      }
      if (v.is_string()) {
        const std::u32string u = Utf32(v.str());
        if (u.empty()) return Value();
        return Value(Utf8(std::u32string(1, n == "first" ? u.front() : u.back())));
      }
      return Err(e.line, "'{}' of a {}", n, v.TypeName());
    }
    if (n == "list") {
      if (v.is_list()) return v;
      if (v.is_string()) {
        List l;
        for (char32_t c : Utf32(v.str())) l.emplace_back(Utf8(std::u32string(1, c)));
        return Value::FromList(std::move(l));
      }
      if (v.is_dict()) {
        List l;
        for (const auto& [k, x] : v.dict()) l.push_back(k);
        return Value::FromList(std::move(l));
      }
      return Err(e.line, "list of a {}", v.TypeName());
    }
    if (n == "items" || n == "dictsort") {
      if (!v.is_dict()) return Err(e.line, "'{}' of a {}", n, v.TypeName());
      List l;
      for (const auto& [k, x] : v.dict()) l.push_back(Value::FromTuple({k, x}));
      if (n == "dictsort") {
        std::stable_sort(l.begin(), l.end(), [](const Value& p, const Value& q) {
          return p.list()[0].Str() < q.list()[0].Str();
        });
      }
      return Value::FromList(std::move(l));
    }
    if (n == "join") {
      if (!v.is_list()) return Err(e.line, "join of a {}", v.TypeName());
      const std::string sep = a.Arg(0, "d", Value("")).Str();
      const Value attr = a.Arg(1, "attribute");
      std::string o;
      for (size_t i = 0; i < v.list().size(); ++i) {
        if (i) o += sep;
        Value item = v.list()[i];
        if (attr.is_string()) {
          ENGRAM_ASSIGN_OR_RETURN(item, GetItem(item, attr));
        }
        o += item.Str();
      }
      return Value(o);
    }
    if (n == "reverse") {
      if (v.is_list()) {
        List l(v.list().rbegin(), v.list().rend());
        return Value::FromList(std::move(l));
      }
      if (v.is_string()) {
        std::u32string u = Utf32(v.str());
        std::reverse(u.begin(), u.end());
        return Value(Utf8(u));
      }
      return Err(e.line, "reverse of a {}", v.TypeName());
    }
    if (n == "selectattr" || n == "rejectattr" || n == "map" || n == "unique" || n == "sort") {
      if (!v.is_list()) return Err(e.line, "'{}' of a {}", n, v.TypeName());
      if (n == "map") {
        const Value attr = a.Arg(99, "attribute");
        List l;
        for (const Value& item : v.list()) {
          if (attr.is_string()) {
            ENGRAM_ASSIGN_OR_RETURN(Value x, GetItem(item, attr));
            if (x.is_undefined()) x = a.Arg(99, "default");
            l.push_back(x);
          } else if (!a.args.empty() && a.args[0].is_string()) {
            auto x = FilterByName(a.args[0].str(), item, e.line);
            if (!x.ok()) return x.status();
            l.push_back(*x);
          } else {
            return Err(e.line, "map needs attribute= or a filter name");
          }
        }
        return Value::FromList(std::move(l));
      }
      if (n == "unique") {
        List l;
        for (const Value& item : v.list()) {
          bool seen = false;
          for (const Value& u : l) seen = seen || u.Equals(item);
          if (!seen) l.push_back(item);
        }
        return Value::FromList(std::move(l));
      }
      if (n == "sort") {
        List l = v.list();
        const bool rev = a.Arg(0, "reverse", Value(false)).Truthy();
        const Value attr = a.Arg(2, "attribute");
        Status bad = Status::Ok();
        auto key = [&](const Value& x) -> Value {
          if (!attr.is_string()) return x;
          auto r = GetItem(x, attr);
          return r.ok() ? *r : Value();
        };
        std::stable_sort(l.begin(), l.end(), [&](const Value& p, const Value& q) {
          const Value kp = key(p), kq = key(q);
          if (kp.is_number() && kq.is_number()) return kp.as_double() < kq.as_double();
          if (kp.is_string() && kq.is_string()) return kp.str() < kq.str();
          bad = InvalidArgument("sort: values that do not compare");
          return false;
        });
        if (!bad.ok()) return Err(e.line, "{}", bad.message());
        if (rev) std::reverse(l.begin(), l.end());
        return Value::FromList(std::move(l));
      }
      // selectattr / rejectattr: (attribute[, test[, args...]])
      const bool select = n == "selectattr";
      if (a.args.empty() || !a.args[0].is_string()) {
        return Err(e.line, "{} needs an attribute name", n);
      }
      List l;
      for (const Value& item : v.list()) {
        ENGRAM_ASSIGN_OR_RETURN(Value x, GetItem(item, a.args[0]));
        bool t = x.Truthy();
        if (a.args.size() >= 2) {
          const std::string test = a.args[1].Str();
          if (test == "defined") {
            t = !x.is_undefined();
          } else if (test == "undefined") {
            t = x.is_undefined();
          } else if (test == "none") {
            t = x.is_none();
          } else if (test == "equalto" || test == "eq" || test == "==") {
            t = a.args.size() >= 3 && x.Equals(a.args[2]);
          } else if (test == "ne" || test == "!=") {
            t = a.args.size() >= 3 && !x.Equals(a.args[2]);
          } else if (test == "string") {
            t = x.is_string();
          } else if (test == "true") {
            t = x.kind() == Value::Kind::kBool && x.as_bool();
          } else if (test == "false") {
            t = x.kind() == Value::Kind::kBool && !x.as_bool();
          } else if (test == "in") {
            ENGRAM_ASSIGN_OR_RETURN(t,
                                    Contains(a.args.size() >= 3 ? a.args[2] : Value(), x, e.line));
          } else {
            return Err(e.line, "{}: the test '{}' is not supported here", n, test);
          }
        }
        if (t == select) l.push_back(item);
      }
      return Value::FromList(std::move(l));
    }
    if (n == "int") {
      if (v.kind() == Value::Kind::kInt) return v;
      if (v.kind() == Value::Kind::kFloat) return Value(static_cast<int64_t>(v.as_double()));
      if (v.kind() == Value::Kind::kBool) return Value(static_cast<int64_t>(v.as_bool()));
      if (v.is_string()) {
        char* end = nullptr;
        const long long x = std::strtoll(v.str().c_str(), &end, 10);
        if (end && *end == '\0' && !v.str().empty()) return Value(static_cast<int64_t>(x));
      }
      return a.Arg(0, "default", Value(int64_t{0}));
    }
    if (n == "float") {
      if (v.is_number()) return Value(v.as_double());
      if (v.is_string()) {
        char* end = nullptr;
        const double x = std::strtod(v.str().c_str(), &end);
        if (end && *end == '\0' && !v.str().empty()) return Value(x);
      }
      return a.Arg(0, "default", Value(0.0));
    }
    if (n == "abs") {
      if (v.kind() == Value::Kind::kInt) return Value(v.as_int() < 0 ? -v.as_int() : v.as_int());
      if (v.kind() == Value::Kind::kFloat) return Value(std::fabs(v.as_double()));
      return Err(e.line, "abs of a {}", v.TypeName());
    }
    if (n == "round") {
      const Value prec = a.Arg(0, "precision", Value(int64_t{0}));
      if (!v.is_number()) return Err(e.line, "round of a {}", v.TypeName());
      const double m = std::pow(10.0, static_cast<double>(prec.as_int()));
      return Value(std::nearbyint(v.as_double() * m) / m);
    }
    if (n == "indent") {
      const int64_t w = a.Arg(0, "width", Value(int64_t{4})).as_int();
      const bool first = a.Arg(1, "first", Value(false)).Truthy();
      const std::string pad(static_cast<size_t>(std::clamp<int64_t>(w, 0, 256)), ' ');
      const std::string s = v.Str();
      std::string o;
      size_t pos = 0;
      bool line0 = true;
      while (pos <= s.size()) {
        size_t end = s.find('\n', pos);
        const bool last = end == std::string::npos;
        const std::string line = s.substr(pos, last ? std::string::npos : end - pos);
        if ((!line0 || first) && !line.empty()) o += pad;
        o += line;
        if (last) break;
        o += '\n';
        pos = end + 1;
        line0 = false;
      }
      return Value(o);
    }
    if (n == "wordcount") {
      int64_t words = 0;
      bool in = false;
      for (char c : v.Str()) {
        const bool w = std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
                       (static_cast<unsigned char>(c) >= 0x80);
        if (w && !in) ++words;
        in = w;
      }
      return Value(words);
    }
    if (n == "center") {
      const int64_t w = a.Arg(0, "width", Value(int64_t{80})).as_int();
      std::string s = v.Str();
      const int64_t len = static_cast<int64_t>(Utf32(s).size());
      if (w <= len || w > (1 << 20)) return Value(s);
      const int64_t total = w - len, left = total / 2 + (total & w & 1);
      return Value(std::string(static_cast<size_t>(left), ' ') + s +
                   std::string(static_cast<size_t>(total - left), ' '));
    }
    return Err(e.line, "unknown filter '{}'", n);
  }

  Result<Value> FilterByName(const std::string& name, const Value& v, int line) {
    Expr call;
    call.kind = Expr::Kind::kFilter;
    call.name = name;
    call.line = line;
    auto lit = std::make_unique<Expr>();
    lit->kind = Expr::Kind::kLiteral;
    lit->value = v;
    call.args.push_back(std::move(lit));
    return ApplyFilter(call);
  }

  const std::string& source_;
  const RenderLimits& limits_;
  std::vector<Scope> scopes_;
  std::string* out_ = nullptr;
  int64_t steps_ = 0;
  int depth_ = 0;
  int eval_depth_ = 0;
};

}  // namespace

Result<std::string> Render(const Body& body, const Value& vars, const std::string& source,
                           const RenderLimits& limits) {
  std::string out;
  Renderer r(source, limits);
  ENGRAM_RETURN_IF_ERROR(r.Run(body, vars, &out));
  return out;
}

}  // namespace engram::jinja
