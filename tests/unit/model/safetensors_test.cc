#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "../../support/temp_dir.h"
#include "common/mapped_files.h"

namespace engram {
namespace {

using json = nlohmann::json;
using testutil::ReadFile;
using testutil::TempDir;
using testutil::WriteFile;

// A raw safetensors file: 8-byte length, `header` verbatim, then `data`.
std::string RawFile(const std::string& header, const std::string& data, int64_t len = -1) {
  const uint64_t n = len >= 0 ? static_cast<uint64_t>(len) : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

bool Contains(const Status& s, const std::string& text) {
  return s.message().find(text) != std::string::npos;
}

Status WriteTensors(const std::string& path,
                    const std::vector<std::pair<SafetensorsWriter::Spec, std::string>>& tensors) {
  std::vector<SafetensorsWriter::Spec> specs;
  for (const auto& [spec, bytes] : tensors) specs.push_back(spec);
  auto w = SafetensorsWriter::Create(path, specs, {{"format", "pt"}});
  if (!w.ok()) return w.status();
  for (const auto& [spec, bytes] : tensors) {
    ENGRAM_RETURN_IF_ERROR((*w)->Append(bytes.data(), bytes.size()));
  }
  return (*w)->Finish();
}

std::string Bytes(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

void RoundTrip(DType dtype) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  std::vector<float> f = {0.f, 1.f, -2.5f, 3.25f, 1e-3f, -7.f};
  std::vector<uint16_t> h;
  for (float x : f) h.push_back(dtype == DType::kBF16 ? F32ToBf16(x) : F32ToF16(x));
  const std::string a =
      dtype == DType::kF32 ? Bytes(f.data(), f.size() * 4) : Bytes(h.data(), h.size() * 2);
  std::string b(5 * DTypeSize(dtype), '\0');
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<char>(i * 37 + 1);
  ASSERT_TRUE(WriteTensors(path, {{{"a", dtype, {2, 3}}, a}, {{"b.weight", dtype, {5}}, b}}).ok());

  const std::string raw = ReadFile(path);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  json header = json::parse(raw.substr(8, n));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["a"]["dtype"], std::string(DTypeName(dtype)));

  auto store = TensorStore::OpenFile(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->Names(), (std::vector<std::string>{"a", "b.weight"}));
  auto ta = store->GetChecked("a", {2, 3});
  ASSERT_TRUE(ta.ok()) << ta.status().ToString();
  EXPECT_EQ(ta->dtype, dtype);
  EXPECT_EQ(Bytes(ta->data, ta->nbytes()), a);
  auto tb = store->Get("b.weight");
  ASSERT_TRUE(tb.ok());
  EXPECT_EQ(Bytes(tb->data, tb->nbytes()), b);
  // file/file_offset locate the bytes for in-place (O_DIRECT) readers.
  const TensorInfo* info = store->Info("b.weight");
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(info->file, path);
  EXPECT_EQ(info->nbytes, b.size());
  EXPECT_EQ(raw.substr(info->file_offset, info->nbytes), b);
  EXPECT_EQ(store->Info("a")->file_offset, 8 + n);
  // Values survive exactly.
  std::vector<float> back(6);
  ConvertToF32(dtype, ta->data, back.data(), 6);
  for (size_t i = 0; i < 6; ++i) {
    const float expect = dtype == DType::kF32    ? f[i]
                         : dtype == DType::kBF16 ? Bf16ToF32(h[i])
                                                 : F16ToF32(h[i]);
    EXPECT_EQ(back[i], expect);
  }
}

TEST(Safetensors, RoundTripF32) { RoundTrip(DType::kF32); }
TEST(Safetensors, RoundTripBF16) { RoundTrip(DType::kBF16); }
TEST(Safetensors, RoundTripF16) { RoundTrip(DType::kF16); }

TEST(Safetensors, ViewsOutliveTheStore) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  const std::string data(16, '\x2a');
  ASSERT_TRUE(WriteTensors(path, {{{"x", DType::kF32, {4}}, data}}).ok());
  Tensor t;
  {
    auto store = TensorStore::OpenFile(path);
    ASSERT_TRUE(store.ok());
    t = *store->Get("x");
  }
  EXPECT_EQ(Bytes(t.data, 16), data);  // the mapping is kept alive by t.owner
}

TEST(Safetensors, EmptyAndScalarTensors) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  const float one = 1.f;
  ASSERT_TRUE(WriteTensors(path, {{{"empty", DType::kF32, {0, 4}}, ""},
                                  {{"scalar", DType::kF32, {}}, Bytes(&one, 4)}})
                  .ok());
  auto store = TensorStore::OpenFile(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->Info("empty")->nbytes, 0u);
  EXPECT_EQ(*store->Get("scalar")->ptr<float>(), 1.f);
}

TEST(Safetensors, TruncatedFileIsDataLoss) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  ASSERT_TRUE(WriteTensors(path, {{{"w", DType::kF32, {64}}, std::string(256, '\1')}}).ok());
  std::string raw = ReadFile(path);
  WriteFile(path, raw.substr(0, raw.size() - 10));
  auto store = TensorStore::OpenFile(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(store.status(), path)) << store.status().message();
  EXPECT_TRUE(Contains(store.status(), "tensor \"w\"")) << store.status().message();
  EXPECT_TRUE(Contains(store.status(), "truncated")) << store.status().message();
}

TEST(Safetensors, FileShorterThanLengthPrefix) {
  TempDir dir;
  WriteFile(dir / "t.safetensors", "abc");
  auto store = TensorStore::OpenFile(dir / "t.safetensors");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(store.status(), "8-byte header length"));
}

TEST(Safetensors, HeaderLengthBeyondFile) {
  TempDir dir;
  WriteFile(dir / "t.safetensors", RawFile("{}", "", 4096));
  auto store = TensorStore::OpenFile(dir / "t.safetensors");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(store.status(), "header length 4096 extends beyond the file"))
      << store.status().message();
}

TEST(Safetensors, OffsetsBeyondTheFile) {
  TempDir dir;
  const std::string header = R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})";
  WriteFile(dir / "t.safetensors", RawFile(header, std::string(16, '\0')));
  auto store = TensorStore::OpenFile(dir / "t.safetensors");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(store.status(), "tensor \"w\": data_offsets [16, 32] reach beyond"))
      << store.status().message();
}

TEST(Safetensors, OffsetsNotMatchingShape) {
  TempDir dir;
  const std::string header = R"({"w":{"dtype":"BF16","shape":[3,4],"data_offsets":[0,16]}})";
  WriteFile(dir / "t.safetensors", RawFile(header, std::string(32, '\0')));
  auto store = TensorStore::OpenFile(dir / "t.safetensors");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.status().message(),
            (dir / "t.safetensors") +
                ": tensor \"w\": data_offsets [0, 16] hold 16 bytes, but shape [3, 4] x BF16 "
                "needs 24 bytes");
}

TEST(Safetensors, UnknownDtype) {
  TempDir dir;
  const std::string header = R"({"w":{"dtype":"F8_E9M9","shape":[4],"data_offsets":[0,4]}})";
  WriteFile(dir / "t.safetensors", RawFile(header, std::string(4, '\0')));
  auto store = TensorStore::OpenFile(dir / "t.safetensors");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(store.status(), "tensor \"w\": unknown dtype \"F8_E9M9\""))
      << store.status().message();
}

TEST(Safetensors, MalformedHeaderJson) {
  TempDir dir;
  WriteFile(dir / "t.safetensors", RawFile(R"({"w": {"dtype": )", ""));
  auto store = TensorStore::OpenFile(dir / "t.safetensors");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(store.status(), "safetensors header: not valid JSON"))
      << store.status().ToString();
}

TEST(Safetensors, MissingFieldsInEntry) {
  TempDir dir;
  WriteFile(dir / "t.safetensors", RawFile(R"({"w":{"dtype":"F32","shape":[1]}})", "abcd"));
  auto store = TensorStore::OpenFile(dir / "t.safetensors");
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(Contains(store.status(), "tensor \"w\": \"data_offsets\" must be [begin, end]"))
      << store.status().message();
}

TEST(Safetensors, OverlappingTensors) {
  TempDir dir;
  const std::string header = R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                             R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})";
  WriteFile(dir / "t.safetensors", RawFile(header, std::string(24, '\0')));
  auto store = TensorStore::OpenFile(dir / "t.safetensors");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(store.status(), "tensors \"a\" [0, 16] and \"b\" [8, 24] overlap"))
      << store.status().message();
}

TEST(Safetensors, MissingTensorNamesTensorAndSource) {
  TempDir dir;
  ASSERT_TRUE(WriteTensors(dir / "m.safetensors", {{{"x", DType::kF32, {1}}, "abcd"}}).ok());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto t = store->Get("model.norm.weight");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(t.status().message(), dir.path() + ": no tensor \"model.norm.weight\"");
}

TEST(Safetensors, ShapeMismatchNamesFileTensorAndShapes) {
  TempDir dir;
  ASSERT_TRUE(
      WriteTensors(dir / "m.safetensors", {{{"x", DType::kF32, {2, 2}}, std::string(16, 'a')}})
          .ok());
  auto store = TensorStore::OpenFile(dir / "m.safetensors");
  ASSERT_TRUE(store.ok());
  auto t = store->GetChecked("x", {4, 1});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(),
            (dir / "m.safetensors") + ": tensor x has shape [2, 2], expected [4, 1]");
}

TEST(Safetensors, ShardedDirectoryLoads) {
  TempDir dir;
  ASSERT_TRUE(WriteTensors(dir / "model-00001-of-00002.safetensors",
                           {{{"a", DType::kF32, {2}}, std::string(8, 'a')},
                            {{"b", DType::kBF16, {3}}, std::string(6, 'b')}})
                  .ok());
  ASSERT_TRUE(WriteTensors(dir / "model-00002-of-00002.safetensors",
                           {{{"c", DType::kF16, {1}}, std::string(2, 'c')}})
                  .ok());
  json index = {{"metadata", {{"total_size", 16}}},
                {"weight_map",
                 {{"a", "model-00001-of-00002.safetensors"},
                  {"b", "model-00001-of-00002.safetensors"},
                  {"c", "model-00002-of-00002.safetensors"}}}};
  WriteFile(dir / "model.safetensors.index.json", index.dump());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->Names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(store->Info("c")->file, dir / "model-00002-of-00002.safetensors");
  EXPECT_EQ(Bytes(store->Get("c")->data, 2), "cc");
  EXPECT_EQ(Bytes(store->Get("b")->data, 6), "bbbbbb");
}

TEST(Safetensors, IndexNamingMissingShard) {
  TempDir dir;
  ASSERT_TRUE(WriteTensors(dir / "model-00001-of-00002.safetensors",
                           {{{"a", DType::kF32, {2}}, std::string(8, 'a')}})
                  .ok());
  json index = {{"weight_map",
                 {{"a", "model-00001-of-00002.safetensors"},
                  {"lm_head.weight", "model-00002-of-00002.safetensors"}}}};
  WriteFile(dir / "model.safetensors.index.json", index.dump());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.status().message(),
            (dir / "model.safetensors.index.json") +
                ": weight_map names shard \"model-00002-of-00002.safetensors\" (for tensor "
                "\"lm_head.weight\"), which does not exist");
}

TEST(Safetensors, MalformedIndexJson) {
  TempDir dir;
  ASSERT_TRUE(WriteTensors(dir / "model.safetensors", {{{"a", DType::kF32, {1}}, "abcd"}}).ok());
  WriteFile(dir / "model.safetensors.index.json", R"({"weight_map": {"a": )");
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(store.status(), "model.safetensors.index.json: not valid JSON"))
      << store.status().ToString();

  WriteFile(dir / "model.safetensors.index.json", R"({"weights": {}})");
  store = TensorStore::OpenDirectory(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(Contains(store.status(), "missing object \"weight_map\""));
}

TEST(Safetensors, IndexPointingAtWrongShard) {
  TempDir dir;
  ASSERT_TRUE(WriteTensors(dir / "s1.safetensors", {{{"a", DType::kF32, {1}}, "abcd"}}).ok());
  ASSERT_TRUE(WriteTensors(dir / "s2.safetensors", {{{"b", DType::kF32, {1}}, "abcd"}}).ok());
  json index = {{"weight_map", {{"a", "s2.safetensors"}, {"b", "s2.safetensors"}}}};
  WriteFile(dir / "model.safetensors.index.json", index.dump());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(Contains(store.status(), "puts tensor \"a\" in \"s2.safetensors\", but that file"))
      << store.status().message();
}

TEST(Safetensors, DirectoryWithoutIndexAndDuplicates) {
  TempDir dir;
  ASSERT_TRUE(WriteTensors(dir / "a.safetensors", {{{"x", DType::kF32, {1}}, "abcd"}}).ok());
  ASSERT_TRUE(WriteTensors(dir / "b.safetensors", {{{"y", DType::kF32, {1}}, "efgh"}}).ok());
  auto store = TensorStore::OpenDirectory(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(store->Names().size(), 2u);

  ASSERT_TRUE(WriteTensors(dir / "c.safetensors", {{{"x", DType::kF32, {1}}, "ijkl"}}).ok());
  store = TensorStore::OpenDirectory(dir.path());
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(Contains(store.status(), "tensor \"x\" appears in both"));

  TempDir empty;
  store = TensorStore::OpenDirectory(empty.path());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound);
}

TEST(Safetensors, WriterChecksByteCounts) {
  TempDir dir;
  const std::string path = dir / "w.safetensors";
  auto w = SafetensorsWriter::Create(path, {{"a", DType::kF32, {2}}, {"b", DType::kF32, {1}}});
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append("abcdefghij", 10).ok());   // crosses into "b"
  EXPECT_FALSE((*w)->Append("abcdefghij", 10).ok());  // only 2 bytes left
  Status st = (*w)->Finish();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  w->reset();  // destroyed unfinished: no file is left behind
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));

  auto dup = SafetensorsWriter::Create(path, {{"a", DType::kF32, {2}}, {"a", DType::kF32, {1}}});
  EXPECT_FALSE(dup.ok());
}

TEST(Safetensors, WriterStreamsLargeAppends) {
  TempDir dir;
  const std::string path = dir / "big.safetensors";
  const size_t n = (size_t{40} << 20) / 4;  // 40 MB: beyond the writer's buffer
  std::vector<float> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = static_cast<float>(i % 1000);
  auto w = SafetensorsWriter::Create(
      path, {{"small", DType::kF32, {3}}, {"big", DType::kF32, {static_cast<int64_t>(n)}}});
  ASSERT_TRUE(w.ok());
  const float three[3] = {1, 2, 3};
  ASSERT_TRUE((*w)->Append(three, sizeof(three)).ok());
  ASSERT_TRUE((*w)->Append(data.data(), n * 2).ok());  // in two pieces
  ASSERT_TRUE((*w)->Append(data.data() + n / 2, n * 2).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto store = TensorStore::OpenFile(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(std::memcmp(store->Get("small")->data, three, sizeof(three)), 0);
  EXPECT_EQ(std::memcmp(store->Get("big")->data, data.data(), n * 4), 0);
}

TEST(Safetensors, InMemoryTensors) {
  TensorStore store;
  Tensor t = HostTensor(DType::kF32, {2, 2});
  t.ptr<float>()[3] = 5.f;
  store.AddInMemory("m", t);
  EXPECT_TRUE(store.Has("m"));
  EXPECT_EQ(store.Info("m")->file, "");
  EXPECT_EQ(store.Info("m")->nbytes, 16u);
  EXPECT_EQ(store.Get("m")->ptr<float>()[3], 5.f);
  auto bad = store.GetChecked("m", {4});
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status(), "tensor m has shape [2, 2], expected [4]"));
}

// A served file that shrinks used to kill the process with SIGBUS at the next read of a page
// past its new end. Now the read sees zeros, and CheckMappedFiles names the file, until the
// store is gone.
TEST(MappedFiles, TruncationUnderAMappingIsCaughtNotFatal) {
  TempDir dir;
  const std::string path = dir / "big.safetensors";
  const size_t n = 1 << 20;  // 4 MiB of F32: many pages past any truncation point
  std::string data(n * 4, '\x01');
  ASSERT_TRUE(WriteTensors(path, {{{"w", DType::kF32, {int64_t(n)}}, data}}).ok());
  {
    auto store = TensorStore::OpenFile(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE(CheckMappedFiles().ok());
    auto t = store->Get("w");
    ASSERT_TRUE(t.ok());
    const uint64_t faults = MappedFileFaults();
    ASSERT_EQ(::truncate(path.c_str(), 8192), 0);
    const volatile unsigned char* p = static_cast<const unsigned char*>(t->data);
    uint64_t sum = 0;
    for (size_t i = 0; i < n * 4; i += 4096) sum += p[i];
    EXPECT_GT(MappedFileFaults(), faults);
    EXPECT_LT(sum, n * 4 / 4096);  // the pages past the end read as zeros
    const Status st = CheckMappedFiles();
    EXPECT_EQ(st.code(), StatusCode::kDataLoss);
    EXPECT_NE(st.message().find(path + ": the file shrank while engramd served it"),
              std::string::npos)
        << st.message();
  }
  EXPECT_TRUE(CheckMappedFiles().ok()) << "a closed store's file still counts";
}

TEST(MappedFiles, RewritingInPlaceIsCaught) {
  TempDir dir;
  const std::string path = dir / "t.safetensors";
  std::string data(4096, '\x02');
  ASSERT_TRUE(WriteTensors(path, {{{"w", DType::kF32, {1024}}, data}}).ok());
  auto store = TensorStore::OpenFile(path);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(CheckMappedFiles().ok());
  // Same size, other bytes, a later mtime: what `cp other.safetensors t.safetensors` does.
  const int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "xxxx", 4, 200), 4);
  const timespec later[2] = {{0, UTIME_OMIT}, {::time(nullptr) + 5, 0}};
  ::futimens(fd, later);
  ::close(fd);
  const Status st = CheckMappedFiles();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("the file changed while engramd served it"), std::string::npos)
      << st.message();
}

}  // namespace
}  // namespace engram
