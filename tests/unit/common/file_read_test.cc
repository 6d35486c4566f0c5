// Hostile files for the readers every config and sidecar goes through: devices, FIFOs with no
// writer, directories, oversized files, deep nesting and numbers JSON cannot hold.
#include "common/file_read.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace engram {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string t = (fs::temp_directory_path() / "engram_file_read_XXXXXX").string();
    if (::mkdtemp(t.data())) path_ = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& n) const { return path_ + "/" + n; }

 private:
  std::string path_;
};

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(ReadRegularFile, ReadsARegularFile) {
  TempDir d;
  Write(d / "a.json", "{\"x\": 1}");
  auto r = ReadRegularFile(d / "a.json", 100, "config file");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "{\"x\": 1}");
}

TEST(ReadRegularFile, RefusesDevices) {
  for (const char* dev : {"/dev/zero", "/dev/urandom", "/dev/null"}) {
    auto r = ReadRegularFile(dev, 1 << 20, "tokenizer");
    ASSERT_FALSE(r.ok()) << dev;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("a character device, expected a regular file"),
              std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find(dev), std::string::npos);
  }
}

TEST(ReadRegularFile, FifoWithNoWriterFailsAtOnce) {
  TempDir d;
  const std::string fifo = d / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = ReadRegularFile(fifo, 1 << 20, "config file");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("a FIFO"), std::string::npos) << r.status().message();
  EXPECT_LT(s, 5.0);  // not a timing test: a blocking open would never return
}

TEST(ReadRegularFile, RefusesDirectoriesMissingAndOversizedFiles) {
  TempDir d;
  Write(d / "big", std::string(101, 'x'));
  auto big = ReadRegularFile(d / "big", 100, "model config");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("101 bytes, more than the 100 bytes"), std::string::npos)
      << big.status().message();
  auto dir = ReadRegularFile(d / ".", 100, "model config");
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("a directory"), std::string::npos);
  auto missing = ReadRegularFile(d / "nope", 100, "model config");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(ParseJson, RefusesDeepNestingWithoutRecursing) {
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  auto r = ParseJson(deep, "tokenizer.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested deeper than 128 levels"), std::string::npos)
      << r.status().message();
  // Brackets inside strings do not count.
  auto ok = ParseJson("{\"a\": \"[[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[[\"}", "x");
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(JsonNestingDepth("[{\"k\": [1, {\"j\": []}]}]", 100), 5);
}

TEST(ParseJson, NumberOverflowAndSyntaxErrorsAreStatuses) {
  auto big = ParseJson("{\"rope_theta\": 1e400}", "config.json");
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("config.json"), std::string::npos);
  EXPECT_NE(big.status().message().find("number overflow"), std::string::npos)
      << big.status().message();
  auto bad = ParseJson("{\"a\": ", "config.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid JSON"), std::string::npos);
}

TEST(ReadJsonFile, NamesTheFile) {
  TempDir d;
  Write(d / "c.json", "{\"a\": [}");
  auto r = ReadJsonFile(d / "c.json", 100, "model config");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(d / "c.json"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace engram
