#include "text/jinja_parser.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>

#include "text/utf8.h"

namespace engram::jinja {
namespace {

constexpr int kMaxDepth = 128;

// ---- segments: text and tags ---------------------------------------------------------

struct Segment {
  enum class Kind { kText, kVar, kBlock, kComment } kind;
  std::string body;  // text, or the inside of the tag (markers and '-'/'+' removed)
  int line = 0;
  bool strip_before = false;  // {%- {{- {#-
  bool keep_before = false;   // {%+ (no lstrip_blocks)
  bool strip_after = false;   // -%} -}} -#}
  bool keep_after = false;    // +%} (no trim_blocks)
};

int CountLines(std::string_view s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// The end of a tag opened at `pos` (just after "{{" or "{%"), skipping string literals; npos
// when it never closes.
size_t FindTagEnd(std::string_view t, size_t pos, char close) {
  char quote = 0;
  for (size_t i = pos; i + 1 < t.size(); ++i) {
    const char c = t[i];
    if (quote) {
      if (c == '\\') {
        ++i;
      } else if (c == quote) {
        quote = 0;
      }
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == close && t[i + 1] == '}') {
      return i;
    }
  }
  return std::string_view::npos;
}

Status Segments(std::string_view t, const std::string& source, std::vector<Segment>* out) {
  size_t pos = 0;
  int line = 1;
  while (pos < t.size()) {
    size_t open = t.find('{', pos);
    while (open != std::string_view::npos && open + 1 < t.size() && t[open + 1] != '{' &&
           t[open + 1] != '%' && t[open + 1] != '#') {
      open = t.find('{', open + 1);
    }
    if (open == std::string_view::npos || open + 1 >= t.size()) {
      out->push_back({Segment::Kind::kText, std::string(t.substr(pos)), line});
      break;
    }
    if (open > pos) {
      out->push_back({Segment::Kind::kText, std::string(t.substr(pos, open - pos)), line});
      line += CountLines(t.substr(pos, open - pos));
    }
    const char kind = t[open + 1];
    Segment s{kind == '{'   ? Segment::Kind::kVar
              : kind == '%' ? Segment::Kind::kBlock
                            : Segment::Kind::kComment,
              "", line};
    size_t inner = open + 2;
    if (inner < t.size() && t[inner] == '-') {
      s.strip_before = true;
      ++inner;
    } else if (inner < t.size() && t[inner] == '+' && kind != '{') {
      s.keep_before = true;
      ++inner;
    }
    size_t end;
    if (kind == '#') {
      end = t.find("#}", inner);
    } else {
      end = FindTagEnd(t, inner, kind == '{' ? '}' : '%');
    }
    if (end == std::string_view::npos) {
      return InvalidArgument("{}: line {}: the tag opened here is never closed (expected \"{}\")",
                             source, line,
                             kind == '{'   ? "}}"
                             : kind == '%' ? "%}"
                                           : "#}");
    }
    size_t body_end = end;
    if (body_end > inner && t[body_end - 1] == '-') {
      s.strip_after = true;
      --body_end;
    } else if (body_end > inner && t[body_end - 1] == '+' && kind != '{') {
      s.keep_after = true;
      --body_end;
    }
    s.body = std::string(t.substr(inner, body_end - inner));
    line += CountLines(t.substr(open, end + 2 - open));
    pos = end + 2;
    out->push_back(std::move(s));
  }
  // Whitespace control, trim_blocks and lstrip_blocks, as Jinja2's lexer applies them.
  for (size_t i = 0; i < out->size(); ++i) {
    Segment& s = (*out)[i];
    if (s.kind != Segment::Kind::kText) continue;
    bool trim_newline = false;
    if (i > 0) {
      const Segment& prev = (*out)[i - 1];
      if (prev.strip_after) {
        size_t k = 0;
        while (k < s.body.size() && std::isspace(static_cast<unsigned char>(s.body[k]))) ++k;
        s.body.erase(0, k);
      } else if (prev.kind != Segment::Kind::kVar && !prev.keep_after) {
        trim_newline = true;  // trim_blocks: the first newline after a block tag
      }
    }
    if (i + 1 < out->size()) {
      const Segment& next = (*out)[i + 1];
      if (next.strip_before) {
        while (!s.body.empty() && std::isspace(static_cast<unsigned char>(s.body.back()))) {
          s.body.pop_back();
        }
      } else if (next.kind != Segment::Kind::kVar && !next.keep_before) {
        // lstrip_blocks: only whitespace between the start of the line and the tag.
        const size_t l_pos = s.body.rfind('\n') + 1;  // npos + 1 == 0
        bool blank = true;
        for (size_t k = l_pos; k < s.body.size() && blank; ++k) {
          blank = s.body[k] == ' ' || s.body[k] == '\t' || s.body[k] == '\r' || s.body[k] == '\f' ||
                  s.body[k] == '\v';
        }
        if (blank && (l_pos > 0 || i == 0)) s.body.erase(l_pos);
      }
    }
    if (trim_newline) {
      if (s.body.rfind("\r\n", 0) == 0) {
        s.body.erase(0, 2);
      } else if (!s.body.empty() && (s.body[0] == '\n' || s.body[0] == '\r')) {
        s.body.erase(0, 1);
      }
    }
  }
  return Status::Ok();
}

// ---- tokens ---------------------------------------------------------------------------

struct Token {
  enum class Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string text;
  int64_t i = 0;
  double d = 0;
};

Status Tokenize(const std::string& s, const std::string& where, std::vector<Token>* out) {
  size_t i = 0;
  static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                               "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                               "]",  "{",  "}",  ",",  ".",  ":",  "|"};
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out->push_back({Token::Kind::kName, s.substr(i, j - i)});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool is_float = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string num;
      for (size_t k = i; k < j; ++k) {
        if (s[k] != '_') num += s[k];
      }
      Token t{is_float ? Token::Kind::kFloat : Token::Kind::kInt, num};
      if (is_float) {
        t.d = std::strtod(num.c_str(), nullptr);
      } else {
        auto r = std::from_chars(num.data(), num.data() + num.size(), t.i);
        if (r.ec != std::errc())
          return InvalidArgument("{}: the number {} is too large", where, num);
      }
      out->push_back(t);
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      bool closed = false;
      while (j < s.size()) {
        const char d = s[j];
        if (d == c) {
          closed = true;
          ++j;
          break;
        }
        if (d == '\\' && j + 1 < s.size()) {
          const char e = s[j + 1];
          j += 2;
          switch (e) {
            case 'n':
              v += '\n';
              break;
            case 't':
              v += '\t';
              break;
            case 'r':
              v += '\r';
              break;
            case '\\':
              v += '\\';
              break;
            case '\'':
              v += '\'';
              break;
            case '"':
              v += '"';
              break;
            case '0':
              v += '\0';
              break;
            case 'b':
              v += '\b';
              break;
            case 'f':
              v += '\f';
              break;
            case 'x':
            case 'u':
            case 'U': {
              const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
              if (j + n > s.size()) return InvalidArgument("{}: a bad \\{} escape", where, e);
              uint32_t cp = 0;
              auto r = std::from_chars(s.data() + j, s.data() + j + n, cp, 16);
              if (r.ec != std::errc() || r.ptr != s.data() + j + n || cp > 0x10FFFF ||
                  (cp >= 0xD800 && cp <= 0xDFFF)) {
                return InvalidArgument("{}: a bad \\{} escape", where, e);
              }
              std::string enc;
              utf8::Append(static_cast<char32_t>(cp), &enc);
              v += enc;
              j += n;
              break;
            }
            default:  // Python keeps an unknown escape as it is
              v += '\\';
              v += e;
          }
          continue;
        }
        v += d;
        ++j;
      }
      if (!closed) return InvalidArgument("{}: a string literal is never closed", where);
      out->push_back({Token::Kind::kString, v});
      i = j;
      continue;
    }
    bool matched = false;
    for (const char* op : kOps) {
      const size_t n = std::char_traits<char>::length(op);
      if (s.compare(i, n, op) == 0) {
        out->push_back({Token::Kind::kOp, op});
        i += n;
        matched = true;
        break;
      }
    }
    if (!matched) return InvalidArgument("{}: unexpected character '{}'", where, c);
  }
  out->push_back({Token::Kind::kEnd, ""});
  return Status::Ok();
}

// ---- expressions ----------------------------------------------------------------------

class ExprParser {
 public:
  ExprParser(std::vector<Token> toks, std::string where, int line)
      : t_(std::move(toks)), where_(std::move(where)), line_(line) {}

  const Token& Peek(size_t k = 0) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  bool IsOp(const char* op, size_t k = 0) const {
    return Peek(k).kind == Token::Kind::kOp && Peek(k).text == op;
  }
  bool IsName(const char* n, size_t k = 0) const {
    return Peek(k).kind == Token::Kind::kName && Peek(k).text == n;
  }
  bool AtEnd() const { return Peek().kind == Token::Kind::kEnd; }
  const Token& Next() { return t_[std::min(p_++, t_.size() - 1)]; }
  Status Expect(const char* op) {
    if (!IsOp(op)) return Err(fmt::format("expected '{}'", op));
    ++p_;
    return Status::Ok();
  }
  Status Err(const std::string& what) const {
    const Token& t = Peek();
    return InvalidArgument("{}: {} (found {})", where_, what,
                           t.kind == Token::Kind::kEnd ? "the end of the tag" : "'" + t.text + "'");
  }
  Result<std::string> Name() {
    if (Peek().kind != Token::Kind::kName) return Err("expected a name");
    return Next().text;
  }

  Result<ExprPtr> Expression() { return Cond(); }
  // An expression without a trailing `if ... else` (a for loop's iterable: `for x in y if c`).
  Result<ExprPtr> NoCondExpression() {
    DepthGuard g(&depth_);
    return Or();
  }

 private:
  ExprPtr Make(Expr::Kind k) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line_;
    return e;
  }
  struct DepthGuard {
    int* d;
    explicit DepthGuard(int* depth) : d(depth) { ++*d; }
    ~DepthGuard() { --*d; }
  };
  Status CheckDepth() const {
    if (depth_ > kMaxDepth) {
      return InvalidArgument("{}: the expression nests deeper than {} levels", where_, kMaxDepth);
    }
    return Status::Ok();
  }

  Result<ExprPtr> Cond() {
    DepthGuard g(&depth_);
    ENGRAM_RETURN_IF_ERROR(CheckDepth());
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Or());
    while (IsName("if")) {
      ++p_;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr test, Or());
      ExprPtr other;
      if (IsName("else")) {
        ++p_;
        ENGRAM_ASSIGN_OR_RETURN(other, Cond());
      }
      ExprPtr c = Make(Expr::Kind::kCond);
      c->args.push_back(std::move(a));
      c->args.push_back(std::move(test));
      c->args.push_back(std::move(other));
      a = std::move(c);
    }
    return a;
  }
  ExprPtr Bin(const std::string& op, ExprPtr a, ExprPtr b) {
    ExprPtr e = Make(Expr::Kind::kBinary);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }
  Result<ExprPtr> Or() {
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, And());
    while (IsName("or")) {
      ++p_;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr b, And());
      a = Bin("or", std::move(a), std::move(b));
    }
    return a;
  }
  Result<ExprPtr> And() {
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Not());
    while (IsName("and")) {
      ++p_;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr b, Not());
      a = Bin("and", std::move(a), std::move(b));
    }
    return a;
  }
  Result<ExprPtr> Not() {
    if (IsName("not")) {
      ++p_;
      DepthGuard g(&depth_);
      ENGRAM_RETURN_IF_ERROR(CheckDepth());
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Not());
      ExprPtr e = Make(Expr::Kind::kUnary);
      e->name = "not";
      e->args.push_back(std::move(a));
      return e;
    }
    return Compare();
  }
  Result<ExprPtr> Compare() {
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Math1());
    while (true) {
      std::string op;
      if (Peek().kind == Token::Kind::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        ++p_;
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        p_ += 2;
        op = "not in";
      } else {
        break;
      }
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr b, Math1());
      a = Bin(op, std::move(a), std::move(b));
    }
    return a;
  }
  Result<ExprPtr> Math1() {
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Concat());
    while (IsOp("+") || IsOp("-")) {
      const std::string op = Next().text;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr b, Concat());
      a = Bin(op, std::move(a), std::move(b));
    }
    return a;
  }
  Result<ExprPtr> Concat() {
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Math2());
    while (IsOp("~")) {
      ++p_;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr b, Math2());
      a = Bin("~", std::move(a), std::move(b));
    }
    return a;
  }
  Result<ExprPtr> Math2() {
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Pow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const std::string op = Next().text;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr b, Pow());
      a = Bin(op, std::move(a), std::move(b));
    }
    return a;
  }
  Result<ExprPtr> Pow() {
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Unary(true));
    while (IsOp("**")) {
      ++p_;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr b, Unary(true));
      a = Bin("**", std::move(a), std::move(b));
    }
    return a;
  }
  Result<ExprPtr> Unary(bool with_filter) {
    DepthGuard g(&depth_);
    ENGRAM_RETURN_IF_ERROR(CheckDepth());
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const std::string op = Next().text;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Unary(false));
      node = Make(Expr::Kind::kUnary);
      node->name = op;
      node->args.push_back(std::move(a));
    } else {
      ENGRAM_ASSIGN_OR_RETURN(node, Primary());
      ENGRAM_ASSIGN_OR_RETURN(node, Postfix(std::move(node)));
    }
    if (with_filter) {
      ENGRAM_ASSIGN_OR_RETURN(node, FilterExpr(std::move(node)));
    }
    return node;
  }
  Status Args(std::vector<ExprPtr>* args, std::vector<std::pair<std::string, ExprPtr>>* kwargs) {
    ENGRAM_RETURN_IF_ERROR(Expect("("));
    while (!IsOp(")")) {
      if (Peek().kind == Token::Kind::kName && IsOp("=", 1)) {
        const std::string name = Next().text;
        ++p_;
        ENGRAM_ASSIGN_OR_RETURN(ExprPtr v, Expression());
        kwargs->emplace_back(name, std::move(v));
      } else {
        if (!kwargs->empty()) return Err("a positional argument after a keyword argument");
        ENGRAM_ASSIGN_OR_RETURN(ExprPtr v, Expression());
        args->push_back(std::move(v));
      }
      if (!IsOp(",")) break;
      ++p_;
    }
    return Expect(")");
  }
  Result<ExprPtr> Postfix(ExprPtr node) {
    while (true) {
      if (IsOp(".")) {
        ++p_;
        ExprPtr e = Make(Expr::Kind::kAttr);
        if (Peek().kind == Token::Kind::kInt) {  // a.0 is a[0]
          e->kind = Expr::Kind::kItem;
          ExprPtr idx = Make(Expr::Kind::kLiteral);
          idx->value = Value(Next().i);
          e->args.push_back(std::move(node));
          e->args.push_back(std::move(idx));
        } else {
          ENGRAM_ASSIGN_OR_RETURN(e->name, Name());
          e->args.push_back(std::move(node));
        }
        node = std::move(e);
      } else if (IsOp("[")) {
        ++p_;
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!IsOp(":") && !IsOp("]")) {
            ENGRAM_ASSIGN_OR_RETURN(parts[k], Expression());
          }
          if (IsOp(":") && k < 2) {
            ++p_;
            slice = true;
            continue;
          }
          break;
        }
        ENGRAM_RETURN_IF_ERROR(Expect("]"));
        ExprPtr e = Make(slice ? Expr::Kind::kSlice : Expr::Kind::kItem);
        e->args.push_back(std::move(node));
        if (!slice && !parts[0]) return Err("an empty subscript");
        e->args.push_back(std::move(parts[0]));
        if (slice) {
          e->args.push_back(std::move(parts[1]));
          e->args.push_back(std::move(parts[2]));
        }
        node = std::move(e);
      } else if (IsOp("(")) {
        ExprPtr e = Make(Expr::Kind::kCall);
        e->args.push_back(std::move(node));
        ENGRAM_RETURN_IF_ERROR(Args(&e->args, &e->kwargs));
        node = std::move(e);
      } else {
        return node;
      }
    }
  }
  Result<ExprPtr> FilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        ++p_;
        ExprPtr e = Make(Expr::Kind::kFilter);
        ENGRAM_ASSIGN_OR_RETURN(e->name, Name());
        e->args.push_back(std::move(node));
        if (IsOp("(")) ENGRAM_RETURN_IF_ERROR(Args(&e->args, &e->kwargs));
        node = std::move(e);
      } else if (IsName("is")) {
        ++p_;
        ExprPtr e = Make(Expr::Kind::kTest);
        if (IsName("not")) {
          ++p_;
          e->negated = true;
        }
        ENGRAM_ASSIGN_OR_RETURN(e->name, Name());
        e->args.push_back(std::move(node));
        if (IsOp("(")) {
          ENGRAM_RETURN_IF_ERROR(Args(&e->args, &e->kwargs));
        } else if (Peek().kind == Token::Kind::kInt || Peek().kind == Token::Kind::kFloat ||
                   Peek().kind == Token::Kind::kString || IsOp("[") || IsOp("{") ||
                   (Peek().kind == Token::Kind::kName && !IsName("and") && !IsName("or") &&
                    !IsName("else") && !IsName("if") && !IsName("in") && !IsName("not") &&
                    !IsName("is"))) {
          ENGRAM_ASSIGN_OR_RETURN(ExprPtr a, Primary());
          ENGRAM_ASSIGN_OR_RETURN(a, Postfix(std::move(a)));
          e->args.push_back(std::move(a));
        }
        node = std::move(e);
      } else if (IsOp("(")) {
        ExprPtr e = Make(Expr::Kind::kCall);
        e->args.push_back(std::move(node));
        ENGRAM_RETURN_IF_ERROR(Args(&e->args, &e->kwargs));
        node = std::move(e);
      } else {
        return node;
      }
    }
  }
  Result<ExprPtr> Primary() {
    DepthGuard g(&depth_);
    ENGRAM_RETURN_IF_ERROR(CheckDepth());
    const Token& t = Peek();
    if (t.kind == Token::Kind::kName) {
      ++p_;
      ExprPtr e = Make(Expr::Kind::kLiteral);
      if (t.text == "true" || t.text == "True") {
        e->value = Value(true);
      } else if (t.text == "false" || t.text == "False") {
        e->value = Value(false);
      } else if (t.text == "none" || t.text == "None") {
        e->value = Value::None();
      } else {
        e->kind = Expr::Kind::kName;
        e->name = t.text;
      }
      return e;
    }
    if (t.kind == Token::Kind::kString) {
      std::string s;
      while (Peek().kind == Token::Kind::kString) s += Next().text;  // "a" "b" is "ab"
      ExprPtr e = Make(Expr::Kind::kLiteral);
      e->value = Value(std::move(s));
      return e;
    }
    if (t.kind == Token::Kind::kInt || t.kind == Token::Kind::kFloat) {
      ++p_;
      ExprPtr e = Make(Expr::Kind::kLiteral);
      e->value = t.kind == Token::Kind::kInt ? Value(t.i) : Value(t.d);
      return e;
    }
    if (IsOp("(")) {
      ++p_;
      if (IsOp(")")) {
        ++p_;
        return Make(Expr::Kind::kTuple);
      }
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr first, Expression());
      if (IsOp(")")) {
        ++p_;
        return first;
      }
      ExprPtr tuple = Make(Expr::Kind::kTuple);
      tuple->args.push_back(std::move(first));
      while (IsOp(",")) {
        ++p_;
        if (IsOp(")")) break;
        ENGRAM_ASSIGN_OR_RETURN(ExprPtr e, Expression());
        tuple->args.push_back(std::move(e));
      }
      ENGRAM_RETURN_IF_ERROR(Expect(")"));
      return tuple;
    }
    if (IsOp("[")) {
      ++p_;
      ExprPtr list = Make(Expr::Kind::kList);
      while (!IsOp("]")) {
        ENGRAM_ASSIGN_OR_RETURN(ExprPtr e, Expression());
        list->args.push_back(std::move(e));
        if (!IsOp(",")) break;
        ++p_;
      }
      ENGRAM_RETURN_IF_ERROR(Expect("]"));
      return list;
    }
    if (IsOp("{")) {
      ++p_;
      ExprPtr dict = Make(Expr::Kind::kDict);
      while (!IsOp("}")) {
        ENGRAM_ASSIGN_OR_RETURN(ExprPtr k, Expression());
        ENGRAM_RETURN_IF_ERROR(Expect(":"));
        ENGRAM_ASSIGN_OR_RETURN(ExprPtr v, Expression());
        dict->args.push_back(std::move(k));
        dict->args.push_back(std::move(v));
        if (!IsOp(",")) break;
        ++p_;
      }
      ENGRAM_RETURN_IF_ERROR(Expect("}"));
      return dict;
    }
    return Err("expected an expression");
  }

  std::vector<Token> t_;
  size_t p_ = 0;
  std::string where_;
  int line_;
  int depth_ = 0;
};

// ---- statements -----------------------------------------------------------------------

class StmtParser {
 public:
  StmtParser(std::vector<Segment> segs, std::string source)
      : segs_(std::move(segs)), source_(std::move(source)) {}

  // Parses statements until a block tag whose first word is in `ends` (left unconsumed;
  // *end gets that word), or the end of the template (then `ends` must be empty).
  Status ParseBody(Body* body, std::initializer_list<const char*> ends, std::string* end,
                   int depth) {
    if (depth > kMaxDepth) {
      return InvalidArgument("{}: blocks nest deeper than {} levels", source_, kMaxDepth);
    }
    while (i_ < segs_.size()) {
      const Segment& s = segs_[i_];
      const std::string where = fmt::format("{}: line {}", source_, s.line);
      if (s.kind == Segment::Kind::kComment) {
        ++i_;
        continue;
      }
      if (s.kind == Segment::Kind::kText) {
        ++i_;
        if (s.body.empty()) continue;
        auto st = std::make_unique<Stmt>();
        st->kind = Stmt::Kind::kText;
        st->text = s.body;
        st->line = s.line;
        body->push_back(std::move(st));
        continue;
      }
      std::vector<Token> toks;
      ENGRAM_RETURN_IF_ERROR(Tokenize(s.body, where, &toks));
      ExprParser p(std::move(toks), where, s.line);
      if (s.kind == Segment::Kind::kVar) {
        ++i_;
        auto st = std::make_unique<Stmt>();
        st->kind = Stmt::Kind::kEmit;
        st->line = s.line;
        ENGRAM_ASSIGN_OR_RETURN(st->expr, p.Expression());
        if (!p.AtEnd()) return p.Err("expected the end of the expression");
        body->push_back(std::move(st));
        continue;
      }
      ENGRAM_ASSIGN_OR_RETURN(std::string word, p.Name());
      for (const char* e : ends) {
        if (word == e) {
          *end = word;
          return Status::Ok();
        }
      }
      if (word == "elif" || word == "else" || word.rfind("end", 0) == 0) {
        std::string want;
        for (const char* e : ends) want += (want.empty() ? "" : " or ") + std::string(e);
        return InvalidArgument("{}: unexpected {{% {} %}} (expected {})", where, word,
                               want.empty() ? "no block end: no block is open" : want);
      }
      ++i_;
      auto st = std::make_unique<Stmt>();
      st->line = s.line;
      if (word == "if") {
        st->kind = Stmt::Kind::kIf;
        ENGRAM_ASSIGN_OR_RETURN(ExprPtr cond, p.Expression());
        ENGRAM_RETURN_IF_ERROR(EndOfTag(p));
        std::string e;
        Body b;
        ENGRAM_RETURN_IF_ERROR(ParseBody(&b, {"elif", "else", "endif"}, &e, depth + 1));
        st->branches.emplace_back(std::move(cond), std::move(b));
        while (e == "elif") {
          ENGRAM_ASSIGN_OR_RETURN(ExprParser q, TagParser("elif"));
          ENGRAM_ASSIGN_OR_RETURN(ExprPtr c, q.Expression());
          ENGRAM_RETURN_IF_ERROR(EndOfTag(q));
          Body eb;
          ENGRAM_RETURN_IF_ERROR(ParseBody(&eb, {"elif", "else", "endif"}, &e, depth + 1));
          st->branches.emplace_back(std::move(c), std::move(eb));
        }
        if (e == "else") {
          ENGRAM_ASSIGN_OR_RETURN(ExprParser q, TagParser("else"));
          ENGRAM_RETURN_IF_ERROR(EndOfTag(q));
          ENGRAM_RETURN_IF_ERROR(ParseBody(&st->else_body, {"endif"}, &e, depth + 1));
        }
        ENGRAM_RETURN_IF_ERROR(Close(e, "endif", st->line));
      } else if (word == "for") {
        st->kind = Stmt::Kind::kFor;
        do {
          ENGRAM_ASSIGN_OR_RETURN(std::string t, p.Name());
          st->targets.push_back(t);
          if (!p.IsOp(",")) break;
          p.Next();
        } while (true);
        if (!p.IsName("in")) return p.Err("expected 'in'");
        p.Next();
        ENGRAM_ASSIGN_OR_RETURN(st->expr, ForIterable(p, /*condexpr=*/false));
        if (p.IsName("if")) {
          p.Next();
          ENGRAM_ASSIGN_OR_RETURN(st->cond, p.Expression());
        }
        if (p.IsName("recursive")) return p.Err("recursive loops are not supported");
        ENGRAM_RETURN_IF_ERROR(EndOfTag(p));
        std::string e;
        ENGRAM_RETURN_IF_ERROR(ParseBody(&st->body, {"else", "endfor"}, &e, depth + 1));
        if (e == "else") {
          ENGRAM_ASSIGN_OR_RETURN(ExprParser q, TagParser("else"));
          ENGRAM_RETURN_IF_ERROR(EndOfTag(q));
          ENGRAM_RETURN_IF_ERROR(ParseBody(&st->else_body, {"endfor"}, &e, depth + 1));
        }
        ENGRAM_RETURN_IF_ERROR(Close(e, "endfor", st->line));
      } else if (word == "set") {
        st->kind = Stmt::Kind::kSet;
        ENGRAM_ASSIGN_OR_RETURN(std::string t, p.Name());
        st->targets.push_back(t);
        if (p.IsOp(".")) {
          p.Next();
          ENGRAM_ASSIGN_OR_RETURN(st->attr, p.Name());
        }
        while (p.IsOp(",")) {
          p.Next();
          ENGRAM_ASSIGN_OR_RETURN(std::string t2, p.Name());
          st->targets.push_back(t2);
        }
        if (p.AtEnd()) {  // {% set x %}...{% endset %}
          if (st->targets.size() != 1 || !st->attr.empty()) return p.Err("expected '='");
          std::string e;
          ENGRAM_RETURN_IF_ERROR(ParseBody(&st->body, {"endset"}, &e, depth + 1));
          ENGRAM_RETURN_IF_ERROR(Close(e, "endset", st->line));
        } else {
          ENGRAM_RETURN_IF_ERROR(p.Expect("="));
          ENGRAM_ASSIGN_OR_RETURN(st->expr, ForIterable(p));
          ENGRAM_RETURN_IF_ERROR(EndOfTag(p));
        }
      } else if (word == "macro") {
        st->kind = Stmt::Kind::kMacro;
        ENGRAM_ASSIGN_OR_RETURN(st->name, p.Name());
        ENGRAM_RETURN_IF_ERROR(p.Expect("("));
        while (!p.IsOp(")")) {
          ENGRAM_ASSIGN_OR_RETURN(std::string param, p.Name());
          st->targets.push_back(param);
          ExprPtr def;
          if (p.IsOp("=")) {
            p.Next();
            ENGRAM_ASSIGN_OR_RETURN(def, p.Expression());
          }
          st->defaults.push_back(std::move(def));
          if (!p.IsOp(",")) break;
          p.Next();
        }
        ENGRAM_RETURN_IF_ERROR(p.Expect(")"));
        ENGRAM_RETURN_IF_ERROR(EndOfTag(p));
        std::string e;
        ENGRAM_RETURN_IF_ERROR(ParseBody(&st->body, {"endmacro"}, &e, depth + 1));
        ENGRAM_RETURN_IF_ERROR(Close(e, "endmacro", st->line));
      } else if (word == "break" || word == "continue") {
        st->kind = word == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
        ENGRAM_RETURN_IF_ERROR(EndOfTag(p));
      } else if (word == "generation") {
        st->kind = Stmt::Kind::kBlock;
        ENGRAM_RETURN_IF_ERROR(EndOfTag(p));
        std::string e;
        ENGRAM_RETURN_IF_ERROR(ParseBody(&st->body, {"endgeneration"}, &e, depth + 1));
        ENGRAM_RETURN_IF_ERROR(Close(e, "endgeneration", st->line));
      } else {
        return InvalidArgument(
            "{}: {{% {} %}} is not supported (supported: if, for, set, macro, break, "
            "continue, generation)",
            where, word);
      }
      body->push_back(std::move(st));
    }
    if (ends.size() != 0) {
      std::string want;
      for (const char* e : ends) want += (want.empty() ? "" : " or ") + std::string(e);
      return InvalidArgument("{}: the template ends inside a block (expected {{% {} %}})", source_,
                             want);
    }
    return Status::Ok();
  }

 private:
  // An iterable or value that may be a bare tuple: `for a in x, y` / `set a = 1, 2`.
  Result<ExprPtr> ForIterable(ExprParser& p, bool condexpr = true) {
    ENGRAM_ASSIGN_OR_RETURN(ExprPtr first, condexpr ? p.Expression() : p.NoCondExpression());
    if (!p.IsOp(",")) return first;
    auto tuple = std::make_unique<Expr>();
    tuple->kind = Expr::Kind::kTuple;
    tuple->args.push_back(std::move(first));
    while (p.IsOp(",")) {
      p.Next();
      if (p.AtEnd() || p.IsName("if")) break;
      ENGRAM_ASSIGN_OR_RETURN(ExprPtr e, condexpr ? p.Expression() : p.NoCondExpression());
      tuple->args.push_back(std::move(e));
    }
    return ExprPtr(std::move(tuple));
  }
  Status EndOfTag(const ExprParser& p) const {
    if (!p.AtEnd()) return p.Err("expected the end of the tag");
    return Status::Ok();
  }
  // The parser of the current tag (its first word already known to be `word`), consumed.
  Result<ExprParser> TagParser(const char* word) {
    const Segment& s = segs_[i_++];
    const std::string where = fmt::format("{}: line {}", source_, s.line);
    std::vector<Token> toks;
    ENGRAM_RETURN_IF_ERROR(Tokenize(s.body, where, &toks));
    ExprParser p(std::move(toks), where, s.line);
    ENGRAM_ASSIGN_OR_RETURN(std::string w, p.Name());
    if (w != word) return p.Err(fmt::format("expected '{}'", word));
    return p;
  }
  Status Close(const std::string& found, const char* want, int opened) {
    if (found != want) {
      return InvalidArgument("{}: line {}: the block opened here ends with {} (expected {})",
                             source_, opened, found, want);
    }
    ENGRAM_ASSIGN_OR_RETURN(ExprParser q, TagParser(want));
    return EndOfTag(q);
  }

  std::vector<Segment> segs_;
  std::string source_;
  size_t i_ = 0;
};

}  // namespace

Result<Body> Parse(std::string_view text, const std::string& source) {
  // Python's str is Unicode: a template that is not UTF-8 could never reach Jinja2.
  if (const size_t bad = utf8::FirstInvalid(text); bad != utf8::kValid) {
    return InvalidArgument("{}: the template is not valid UTF-8 (byte {} of {})", source, bad,
                           text.size());
  }
  std::vector<Segment> segs;
  ENGRAM_RETURN_IF_ERROR(Segments(text, source, &segs));
  StmtParser p(std::move(segs), source);
  Body body;
  std::string end;
  ENGRAM_RETURN_IF_ERROR(p.ParseBody(&body, {}, &end, 0));
  return body;
}

}  // namespace engram::jinja
