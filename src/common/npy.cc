#include "common/npy.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include <fmt/format.h>

namespace engram {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace

Status WriteNpyF32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string dims;
  int64_t n = 1;
  for (int64_t d : shape) {
    dims += fmt::format("{}, ", d);
    n *= d;
  }
  if (shape.size() > 1) dims.resize(dims.size() - 2);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // magic(6) + version(2) + len(2) + header + '\n' padded to a multiple of 64
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  File f(std::fopen(path.c_str(), "wb"));
  if (!f) return ErrnoStatus(StatusCode::kPermissionDenied, "cannot write " + path, errno);
  const uint16_t hlen = static_cast<uint16_t>(header.size());
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  if (std::fwrite(magic, 1, 8, f.get()) != 8 || std::fwrite(&hlen, 2, 1, f.get()) != 1 ||
      std::fwrite(header.data(), 1, header.size(), f.get()) != header.size() ||
      std::fwrite(data, sizeof(float), static_cast<size_t>(n), f.get()) != static_cast<size_t>(n)) {
    return ErrnoStatus(StatusCode::kDataLoss, "short write to " + path, errno);
  }
  return Status::Ok();
}

Status ReadNpyF32(const std::string& path, std::vector<int64_t>* shape, std::vector<float>* data) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return NotFound("cannot open {}", path);
  char magic[8];
  uint16_t hlen = 0;
  if (std::fread(magic, 1, 8, f.get()) != 8 || std::memcmp(magic, "\x93NUMPY", 6) != 0 ||
      std::fread(&hlen, 2, 1, f.get()) != 1) {
    return InvalidArgument("{}: not a .npy file", path);
  }
  std::string header(hlen, '\0');
  if (std::fread(header.data(), 1, hlen, f.get()) != hlen) {
    return DataLoss("{}: truncated header", path);
  }
  if (header.find("'<f4'") == std::string::npos || header.find("False") == std::string::npos) {
    return InvalidArgument("{}: expected little-endian float32 in C order", path);
  }
  const size_t a = header.find('('), b = header.find(')');
  shape->clear();
  int64_t n = 1;
  for (size_t i = a + 1; i < b;) {
    size_t j = header.find(',', i);
    if (j == std::string::npos || j > b) j = b;
    std::string item = header.substr(i, j - i);
    if (item.find_first_not_of(' ') != std::string::npos) {
      shape->push_back(std::stoll(item));
      n *= shape->back();
    }
    i = j + 1;
  }
  data->resize(static_cast<size_t>(n));
  if (std::fread(data->data(), sizeof(float), data->size(), f.get()) != data->size()) {
    return DataLoss("{}: truncated data", path);
  }
  return Status::Ok();
}

}  // namespace engram
