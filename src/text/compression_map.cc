#include "text/compression_map.h"

#include <fstream>
#include "common/file_read.h"

#include <nlohmann/json.hpp>

namespace engram {

CompressionMap CompressionMap::Identity(int64_t vocab_size) {
  CompressionMap m;
  m.lookup_.resize(static_cast<size_t>(vocab_size));
  for (int64_t i = 0; i < vocab_size; ++i) m.lookup_[static_cast<size_t>(i)] = i;
  m.num_compressed_ = vocab_size;
  return m;
}

Result<CompressionMap> CompressionMap::FromLookup(std::vector<int64_t> lookup,
                                                  int64_t num_compressed) {
  for (size_t i = 0; i < lookup.size(); ++i) {
    if (lookup[i] < 0 || lookup[i] >= num_compressed) {
      return InvalidArgument("compression lookup[{}] = {} outside [0, num_compressed = {})", i,
                             lookup[i], num_compressed);
    }
  }
  CompressionMap m;
  m.lookup_ = std::move(lookup);
  m.num_compressed_ = num_compressed;
  return m;
}

Result<CompressionMap> CompressionMap::LoadJson(const std::string& path, int64_t expected_vocab) {
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json j,
                          ReadJsonFile(path, kMaxSidecarFileBytes, "compression map"));
  if (!j.is_object() || !j.contains("lookup") || !j["lookup"].is_array()) {
    return InvalidArgument("{}: expected an object with a \"lookup\" array", path);
  }
  if (!j.contains("num_compressed") || !j["num_compressed"].is_number_integer()) {
    return InvalidArgument("{}: expected an integer \"num_compressed\"", path);
  }
  std::vector<int64_t> lookup;
  lookup.reserve(j["lookup"].size());
  for (const auto& v : j["lookup"]) {
    if (!v.is_number_integer()) {
      return InvalidArgument("{}: lookup[{}] is not an integer", path, lookup.size());
    }
    lookup.push_back(v.get<int64_t>());
  }
  if (expected_vocab > 0 && static_cast<int64_t>(lookup.size()) != expected_vocab) {
    return InvalidArgument("{}: lookup has {} entries, expected vocab_size = {}", path,
                           lookup.size(), expected_vocab);
  }
  auto m = FromLookup(std::move(lookup), j["num_compressed"].get<int64_t>());
  if (!m.ok()) return m.status().WithContext(path);
  return m;
}

}  // namespace engram
