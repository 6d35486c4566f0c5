// CliTest: a gtest fixture that runs the real `engram` binary (ENGRAM_CLI) in a fresh scratch
// directory per test, with stdout and stderr captured. Used by the CLI tests of tests/unit/tools.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace engram::testing {

inline std::string ReadFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class CliTest : public ::testing::Test {
 protected:
  // `prefix` names the scratch directory: <tmp>/<prefix>_<pid>_<test name>.
  explicit CliTest(std::string prefix) : prefix_(std::move(prefix)) {}

  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(ENGRAM_CLI))
        << "build the engram binary first: " << ENGRAM_CLI;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           (prefix_ + "_" + std::to_string(::getpid()) + "_" + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Runs `engram <args>` (args are passed to the shell as they are).
  CliResult Run(const std::string& args) {
    const std::filesystem::path out = dir_ / "stdout.txt", err = dir_ / "stderr.txt";
    const std::string cmd = Quote(ENGRAM_CLI) + " " + args + " >" + Quote(out) + " 2>" + Quote(err);
    const int status = std::system(cmd.c_str());
    CliResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = ReadFile(out);
    r.err = ReadFile(err);
    return r;
  }

  static std::string Quote(const std::filesystem::path& p) {
    std::string q = "'";  // appended, not operator+: GCC 12 misreports -Wrestrict on that
    q += p.string();
    q += "'";
    return q;
  }

  std::filesystem::path dir_;

 private:
  std::string prefix_;
};

}  // namespace engram::testing
