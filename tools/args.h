// Minimal "--key value" / "--flag" argument parsing for the engram CLI commands.
// Unknown options are an error naming the option and listing the accepted ones.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace engram::cli {

class Args {
 public:
  // `options` take a value, `flags` do not. argv[0..first) is skipped.
  static Result<Args> Parse(int argc, char** argv, int first, const std::set<std::string>& options,
                            const std::set<std::string>& flags = {});
  bool Has(const std::string& key) const { return values_.count(key) > 0; }
  bool Flag(const std::string& key) const { return flags_.count(key) > 0; }
  std::optional<std::string> Get(const std::string& key) const;
  Result<std::string> Require(const std::string& key) const;
  Result<long long> GetInt(const std::string& key, long long fallback) const;
  Result<double> GetDouble(const std::string& key, double fallback) const;
  // --key on|off; INVALID_ARGUMENT naming the value otherwise.
  Result<bool> GetOnOff(const std::string& key, bool fallback) const;
  // "a,b,,c" -> {"a", "b", "", "c"} (every comma separates, so "" -> {""} and "a," -> {"a",
  // ""}); INVALID_ARGUMENT when the option is absent.
  Result<std::vector<std::string>> GetList(const std::string& key) const;
  // "1,2,3" -> {1,2,3}; error names the option and the bad element.
  Result<std::vector<long long>> GetIntList(const std::string& key) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_;
  std::vector<std::string> positional_;
};

}  // namespace engram::cli
