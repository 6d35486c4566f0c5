#include "model/table_checksum.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../../support/temp_dir.h"
#include "model/model_files.h"
#include "model/synth.h"
#include "model/weights.h"

namespace engram {
namespace {

using json = nlohmann::json;
using testutil::ReadFile;
using testutil::TempDir;
using testutil::WriteFile;

bool Contains(const Status& st, const std::string& needle) {
  return st.message().find(needle) != std::string::npos;
}

std::vector<unsigned char> Bytes(size_t n, uint32_t seed) {
  std::vector<unsigned char> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<unsigned char>(x);
  }
  return v;
}

// The definition, written out: XXH3-64 of each chunk, then XXH3-64 of the digests as 8
// little-endian bytes each.
uint64_t Direct(const std::vector<unsigned char>& data, size_t chunk) {
  std::vector<unsigned char> cat;
  for (size_t begin = 0; begin < data.size(); begin += chunk) {
    const uint64_t d = XXH3_64bits(data.data() + begin, std::min(chunk, data.size() - begin));
    for (int b = 0; b < 8; ++b) cat.push_back(static_cast<unsigned char>(d >> (8 * b)));
  }
  return XXH3_64bits(cat.data(), cat.size());
}

SynthOptions Tiny(uint64_t seed = 0, const std::string& preset = "tiny") {
  SynthOptions o;
  o.preset = preset;
  o.seed = seed;
  o.progress = false;
  return o;
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  c = static_cast<char>(c ^ 0x10);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(c);
}

const std::string kTable = EngramTableName(EngramConfig{}, 1);  // the tiny preset's only table

TEST(TableChecksum, ChunkedDigestMatchesDirectComputation) {
  const auto data = Bytes(10000, 7);
  for (size_t chunk : {size_t{1000}, size_t{3000}, size_t{9999}, size_t{10000}, size_t{1} << 26}) {
    const uint64_t want = Direct(data, chunk);
    for (int threads : {1, 4, 0}) {
      auto got = ChecksumBytes(data.data(), data.size(), chunk, threads);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      EXPECT_EQ(*got, want) << "chunk " << chunk << " threads " << threads;
    }
  }
  // The chunk size is part of the definition.
  EXPECT_NE(*ChecksumBytes(data.data(), data.size(), 1000, 1),
            *ChecksumBytes(data.data(), data.size(), 3000, 1));
  // One chunk: XXH3 of the chunk digest, not the plain XXH3 of the data.
  EXPECT_NE(*ChecksumBytes(data.data(), data.size(), 1 << 20, 1),
            XXH3_64bits(data.data(), data.size()));
}

TEST(TableChecksum, EmptyInputAndZeroChunk) {
  auto empty = ChecksumBytes(nullptr, 0, 1000, 4);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, XXH3_64bits(nullptr, 0));
  EXPECT_EQ(ChecksumHex(*empty), "2d06800538d394c2");  // XXH3-64 of nothing, seed 0
  const auto data = Bytes(10, 1);
  EXPECT_EQ(ChecksumBytes(data.data(), data.size(), 0, 1).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(TableChecksum, Hex) {
  EXPECT_EQ(ChecksumHex(0x0123456789abcdefull), "0123456789abcdef");
  EXPECT_EQ(ChecksumHex(0), "0000000000000000");
  EXPECT_EQ(*ParseChecksumHex("0123456789abcdef"), 0x0123456789abcdefull);
  EXPECT_EQ(*ParseChecksumHex("FFFFFFFFFFFFFFFF"), ~0ull);
  EXPECT_FALSE(ParseChecksumHex("0123").ok());
  EXPECT_FALSE(ParseChecksumHex("0123456789abcdefa").ok());
  auto bad = ParseChecksumHex("0123456789abcdeg");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(bad.status(), "'g' is not a hex digit")) << bad.status().ToString();
}

// A host copy (the dram tier's) is what gets hashed when given: an intact copy verifies, a
// changed copy fails even though the file is intact.
TEST(TableChecksum, HostCopiesAreCheckedInsteadOfTheFile) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Tiny(3), dir.path()).ok());
  auto m = OpenModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const std::vector<std::string> names = {kTable};
  auto view = m->store.Get(kTable);
  ASSERT_TRUE(view.ok());
  Tensor copy = HostTensor(view->dtype, view->shape);
  std::memcpy(copy.data, view->data, view->nbytes());
  std::map<std::string, Tensor> copies = {{kTable, copy}};
  EXPECT_TRUE(VerifyTableChecksums(*m, names, 0, nullptr, &copies).ok());
  copy.ptr<uint8_t>()[copy.nbytes() / 2] ^= 0x5a;
  const Status st = VerifyTableChecksums(*m, names, 0, nullptr, &copies);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_NE(st.message().find("as copied into host memory"), std::string::npos) << st.message();
  EXPECT_TRUE(VerifyTableChecksums(*m, names).ok()) << "the file itself is intact";
  std::map<std::string, Tensor> short_copy = {{kTable, copy.Rows(0, 1)}};
  EXPECT_EQ(VerifyTableChecksums(*m, names, 0, nullptr, &short_copy).code(), StatusCode::kInternal);
}

TEST(TableChecksum, SynthWritesFileThatVerifies) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Tiny(3), dir.path()).ok());
  const std::string path = dir / "engram_checksums.json";
  ASSERT_TRUE(std::filesystem::exists(path));
  json j = json::parse(ReadFile(path));
  EXPECT_EQ(j["algorithm"], "xxh3-64-chunked");
  EXPECT_EQ(j["chunk_bytes"], 67108864);
  ASSERT_EQ(j["tensors"].size(), 1u);
  const std::string hex = j["tensors"][kTable];
  EXPECT_EQ(hex.size(), 16u);

  auto m = OpenModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->dir, dir.path());
  const std::vector<std::string> names = {kTable};
  ChecksumReport report;
  Status st = VerifyTableChecksums(*m, names, 0, &report);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(report.file_present);
  EXPECT_EQ(report.tensors, 1);
  EXPECT_EQ(report.bytes, m->store.Info(kTable)->nbytes);
  EXPECT_EQ(report.unlisted, 0);

  // The same seed in memory hashes to the same value (the in-memory path).
  auto mem = OpenModel("synth:tiny?seed=3");
  ASSERT_TRUE(mem.ok()) << mem.status().ToString();
  EXPECT_TRUE(mem->dir.empty());
  EXPECT_TRUE(VerifyTableChecksums(mem->store, dir.path(), names, 2).ok());
  EXPECT_EQ(ChecksumHex(*ChecksumTensor(mem->store, kTable, kDefaultChecksumChunkBytes, 1)), hex);
  // A synth: model has no directory: nothing to verify.
  EXPECT_TRUE(VerifyTableChecksums(*mem, names).ok());
}

TEST(TableChecksum, FlippedByteIsDataLossNamingFileAndTensor) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Tiny(), dir.path()).ok());
  TensorInfo info;
  {
    auto store = TensorStore::OpenDirectory(dir.path());
    ASSERT_TRUE(store.ok());
    info = *store->Info(kTable);
  }
  const std::vector<std::string> names = {kTable};
  FlipByte(info.file, info.file_offset + info.nbytes / 2 + 1);
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok());
  Status st = VerifyTableChecksums(*store, dir.path(), names, 4);
  ASSERT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  const json j = json::parse(ReadFile(dir / "engram_checksums.json"));
  const std::string expected = j["tensors"][kTable];
  const std::string found =
      ChecksumHex(*ChecksumTensor(*store, kTable, kDefaultChecksumChunkBytes, 1));
  EXPECT_NE(expected, found);
  for (const std::string& part :
       {kTable + ": checksum xxh3-64-chunked " + expected + " expected (" +
            (dir / "engram_checksums.json") + ")",
        "but the data in " + info.file + " (bytes [" + std::to_string(info.file_offset) + ", " +
            std::to_string(info.file_offset + info.nbytes) + ")) reads " + found,
        std::string("the table is corrupt or was rewritten"),
        "engram pack checksum --model " + dir.path()}) {
    EXPECT_TRUE(Contains(st, part)) << "missing \"" << part << "\" in " << st.ToString();
  }
  // Rewriting the checksums (an intentional change) makes it verify again, here with small
  // chunks on several threads.
  ASSERT_TRUE(WriteTableChecksums(dir.path(), 4, {}, 4096).ok());
  EXPECT_EQ(json::parse(ReadFile(dir / "engram_checksums.json"))["chunk_bytes"], 4096);
  EXPECT_TRUE(VerifyTableChecksums(*store, dir.path(), names, 4).ok());
  FlipByte(info.file, info.file_offset);  // first byte of the table: chunk 0
  st = VerifyTableChecksums(*store, dir.path(), names, 4);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
}

TEST(TableChecksum, OnlyListedTensorsAreChecked) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Tiny(), dir.path()).ok());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok());
  // A backbone byte is not covered by the default file.
  const TensorInfo norm = *store->Info("model.norm.weight");
  FlipByte(norm.file, norm.file_offset);
  const std::vector<std::string> names = {kTable, "model.norm.weight"};
  ChecksumReport report;
  Status st = VerifyTableChecksums(*store, dir.path(), names, 1, &report);
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(report.tensors, 1);
  EXPECT_EQ(report.unlisted, 1);
  // Listing any tensor works the same way.
  ASSERT_TRUE(WriteTableChecksums(dir.path(), 1, names).ok());
  EXPECT_EQ(json::parse(ReadFile(dir / "engram_checksums.json"))["tensors"].size(), 2u);
  EXPECT_TRUE(VerifyTableChecksums(*store, dir.path(), {}, 1).ok());
  FlipByte(norm.file, norm.file_offset);
  st = VerifyTableChecksums(*store, dir.path(), {}, 1);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(st, "model.norm.weight: checksum")) << st.ToString();
  EXPECT_TRUE(Contains(st, "model.safetensors")) << st.ToString();
  // Asking for a tensor the model does not have.
  const std::vector<std::string> bogus = {
      "model.layers.9.engram.multi_head_embedding.embedding.weight"};
  EXPECT_EQ(WriteTableChecksums(dir.path(), 1, bogus).code(), StatusCode::kNotFound);
}

TEST(TableChecksum, TruncatedFileIsDataLossNotACrash) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Tiny(), dir.path()).ok());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok());
  const TensorInfo info = *store->Info(kTable);
  std::filesystem::resize_file(info.file, info.file_offset + info.nbytes / 2);
  const std::vector<std::string> names = {kTable};
  Status st = VerifyTableChecksums(*store, dir.path(), names, 2);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_TRUE(Contains(st, info.file + ": unexpected end of file")) << st.ToString();
  EXPECT_TRUE(Contains(st, kTable)) << st.ToString();
}

TEST(TableChecksum, BadFilesAreInvalidArgument) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Tiny(), dir.path()).ok());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok());
  const std::string path = dir / "engram_checksums.json";
  const std::string good = "0123456789abcdef";
  auto file = [&](const std::string& algorithm, const std::string& chunk, const std::string& name,
                  const std::string& value) {
    return "{\"algorithm\": " + algorithm + ", \"chunk_bytes\": " + chunk + ", \"tensors\": {\"" +
           name + "\": " + value + "}}";
  };
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{\"algorithm\": ", "not valid JSON"},
      {"[1, 2]", "expected a JSON object, found array"},
      {file("\"sha256\"", "1024", kTable, "\"" + good + "\""),
       "algorithm \"sha256\" is not supported (expected \"xxh3-64-chunked\")"},
      {file("7", "1024", kTable, "\"" + good + "\""), "key \"algorithm\" must be a string"},
      {file("\"xxh3-64-chunked\"", "0", kTable, "\"" + good + "\""),
       "key \"chunk_bytes\" must be a positive integer, found number 0"},
      {file("\"xxh3-64-chunked\"", "-5", kTable, "\"" + good + "\""),
       "key \"chunk_bytes\" must be a positive integer"},
      {file("\"xxh3-64-chunked\"", "1.5", kTable, "\"" + good + "\""),
       "key \"chunk_bytes\" must be a positive integer"},
      {file("\"xxh3-64-chunked\"", "1024", kTable, "\"0123\""),
       "tensors.\"" + kTable + "\": \"0123\" is not 16 hex digits"},
      {file("\"xxh3-64-chunked\"", "1024", kTable, "\"0123456789abcdez\""),
       "tensors.\"" + kTable + "\": \"0123456789abcdez\" is not 16 hex digits"},
      {file("\"xxh3-64-chunked\"", "1024", kTable, "42"),
       "tensors.\"" + kTable + "\" must be a string of 16 hex digits"},
      {file("\"xxh3-64-chunked\"", "1024", "model.layers.7.engram.foo", "\"" + good + "\""),
       "tensors lists \"model.layers.7.engram.foo\", which is not a tensor of the model"},
      {"{\"algorithm\": \"xxh3-64-chunked\", \"tensors\": {}}",
       "missing required key \"chunk_bytes\""},
      {"{\"algorithm\": \"xxh3-64-chunked\", \"chunk_bytes\": 1, \"tensors\": {}, \"x\": 1}",
       "unknown key \"x\" (allowed: algorithm, chunk_bytes, tensors)"},
      {"{\"algorithm\": \"xxh3-64-chunked\", \"chunk_bytes\": 1, \"tensors\": []}",
       "key \"tensors\" must be an object"},
  };
  const std::vector<std::string> names = {kTable};
  for (const Case& c : cases) {
    WriteFile(path, c.text);
    Status st = VerifyTableChecksums(*store, dir.path(), names, 1);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.text << " -> " << st.ToString();
    EXPECT_TRUE(Contains(st, path + ": ")) << st.ToString();
    EXPECT_TRUE(Contains(st, c.message)) << "want \"" << c.message << "\" in " << st.ToString();
  }
}

TEST(TableChecksum, AbsentFileIsOk) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Tiny(), dir.path()).ok());
  std::filesystem::remove(dir / "engram_checksums.json");
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok());
  const std::vector<std::string> names = {kTable};
  ChecksumReport report;
  report.tensors = 9;
  EXPECT_TRUE(VerifyTableChecksums(*store, dir.path(), names, 1, &report).ok());
  EXPECT_FALSE(report.file_present);
  EXPECT_EQ(report.tensors, 0);
  EXPECT_TRUE(VerifyTableChecksums(*store, "", names, 1).ok());
  EXPECT_EQ(LoadTableChecksums(dir / "engram_checksums.json").status().code(),
            StatusCode::kNotFound);
}

TEST(TableChecksum, FileRoundTrip) {
  TableChecksums c;
  c.chunk_bytes = 12345;
  c.tensors["b"] = 1;
  c.tensors["a"] = 0xfedcba9876543210ull;
  const std::string text = TableChecksumsJson(c);
  EXPECT_NE(text.find("\"a\": \"fedcba9876543210\""), std::string::npos) << text;
  auto back = ParseTableChecksums(text, "x.json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->chunk_bytes, 12345u);
  EXPECT_EQ(back->tensors, c.tensors);
  TempDir dir;
  ASSERT_TRUE(SaveTableChecksums(dir / "c.json", c).ok());
  EXPECT_FALSE(std::filesystem::exists(dir / "c.json.partial"));
  auto loaded = LoadTableChecksums(dir / "c.json");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->tensors, c.tensors);
}

TEST(TableChecksum, TwoTablesEachVerified) {
  TempDir dir;
  ASSERT_TRUE(WriteSynthModel(Tiny(0, "tiny-qwen2"), dir.path()).ok());
  auto m = OpenModel(dir.path());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const std::vector<std::string> names = {EngramTableName(*m->config.engram, 0),
                                          EngramTableName(*m->config.engram, 1)};
  EXPECT_EQ(json::parse(ReadFile(dir / "engram_checksums.json"))["tensors"].size(), 2u);
  ChecksumReport report;
  ASSERT_TRUE(VerifyTableChecksums(*m, names, 0, &report).ok());
  EXPECT_EQ(report.tensors, 2);
  const TensorInfo second = *m->store.Info(EngramTableName(*m->config.engram, 1));
  FlipByte(second.file, second.file_offset + second.nbytes - 1);  // last byte
  Status st = VerifyTableChecksums(*m, names, 0);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(st, EngramTableName(*m->config.engram, 1) + ": checksum")) << st.ToString();
}

}  // namespace
}  // namespace engram
