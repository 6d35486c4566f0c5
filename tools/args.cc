#include "args.h"

#include <charconv>
#include <cstdlib>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace engram::cli {

Result<Args> Args::Parse(int argc, char** argv, int first, const std::set<std::string>& options,
                         const std::set<std::string>& flags) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0) {
      a.positional_.push_back(s);
      continue;
    }
    std::string key = s.substr(2), value;
    bool has_value = false;
    if (auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
      has_value = true;
    }
    if (flags.count(key)) {
      if (has_value) return InvalidArgument("option --{} takes no value", key);
      a.flags_.insert(key);
    } else if (options.count(key)) {
      if (!has_value) {
        if (i + 1 >= argc) return InvalidArgument("option --{} needs a value", key);
        value = argv[++i];
      }
      a.values_[key] = value;
    } else {
      std::vector<std::string> all;
      for (const auto& o : options) all.push_back("--" + o);
      for (const auto& f : flags) all.push_back("--" + f);
      return InvalidArgument("unknown option --{} (accepted: {})", key, fmt::join(all, ", "));
    }
  }
  return a;
}

std::optional<std::string> Args::Get(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

Result<std::string> Args::Require(const std::string& key) const {
  auto v = Get(key);
  if (!v) return InvalidArgument("missing required option --{}", key);
  return *v;
}

Result<long long> Args::GetInt(const std::string& key, long long fallback) const {
  auto v = Get(key);
  if (!v) return fallback;
  long long out = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || p != v->data() + v->size()) {
    return InvalidArgument("option --{}: \"{}\" is not an integer", key, *v);
  }
  return out;
}

Result<double> Args::GetDouble(const std::string& key, double fallback) const {
  auto v = Get(key);
  if (!v) return fallback;
  char* end = nullptr;
  double out = std::strtod(v->c_str(), &end);
  if (v->empty() || end != v->c_str() + v->size()) {
    return InvalidArgument("option --{}: \"{}\" is not a number", key, *v);
  }
  return out;
}

Result<bool> Args::GetOnOff(const std::string& key, bool fallback) const {
  auto v = Get(key);
  if (!v) return fallback;
  if (*v != "on" && *v != "off") {
    return InvalidArgument("--{} \"{}\" (expected on or off)", key, *v);
  }
  return *v == "on";
}

Result<std::vector<std::string>> Args::GetList(const std::string& key) const {
  ENGRAM_ASSIGN_OR_RETURN(std::string v, Require(key));
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= v.size()) {
    const size_t comma = std::min(v.find(',', pos), v.size());
    out.push_back(v.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

Result<std::vector<long long>> Args::GetIntList(const std::string& key) const {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<std::string> items, GetList(key));
  std::vector<long long> out;
  for (const std::string& item : items) {
    long long x = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), x);
    if (item.empty() || ec != std::errc() || p != item.data() + item.size()) {
      return InvalidArgument("option --{}: element \"{}\" is not an integer", key, item);
    }
    out.push_back(x);
  }
  return out;
}

}  // namespace engram::cli
