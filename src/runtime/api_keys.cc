#include "runtime/api_keys.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <cctype>
#include <fstream>

#include "common/file_read.h"
#include "runtime/server_config.h"

namespace engram {
namespace {

constexpr size_t kMinKey = 16, kMaxKey = 256;

std::array<uint8_t, 32> Sha256(std::string_view s) {
  std::array<uint8_t, 32> d{};
  gnutls_hash_fast(GNUTLS_DIG_SHA256, s.data(), s.size(), d.data());
  return d;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

Status CheckApiKey(std::string_view key) {
  if (key.size() < kMinKey || key.size() > kMaxKey) {
    return InvalidArgument("an API key is {} characters, expected {}..{}", key.size(), kMinKey,
                           kMaxKey);
  }
  for (size_t i = 0; i < key.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(key[i]);
    if (c <= 0x20 || c >= 0x7f) {
      return InvalidArgument(
          "an API key holds a space, control or non-ASCII character at position {} (expected "
          "printable ASCII without spaces)",
          i);
    }
  }
  return Status::Ok();
}

Result<ApiKeys> ApiKeys::FromKeys(const std::vector<std::string>& keys) {
  ApiKeys k;
  for (const std::string& key : keys) {
    ENGRAM_RETURN_IF_ERROR(CheckApiKey(key));
    k.digests_.push_back(Sha256(key));
  }
  return k;
}

Result<ApiKeys> ApiKeys::Load(const ServerConfig& config) {
  std::vector<std::string> keys = config.server.api_keys;
  const std::string& path = config.server.api_key_file;
  if (!path.empty()) {
    constexpr size_t kMaxFile = 1 << 20;
    ENGRAM_ASSIGN_OR_RETURN(std::string text,
                            ReadRegularFile(path, kMaxFile, "server.api_key_file"));
    size_t found = 0, line_no = 0, pos = 0;
    while (pos <= text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      ++line_no;
      const std::string_view line = Trim(std::string_view(text).substr(pos, end - pos));
      pos = end + 1;
      if (line.empty() || line.front() == '#') continue;
      if (Status st = CheckApiKey(line); !st.ok()) {
        return InvalidArgument("server.api_key_file {}: line {}: {}", path, line_no, st.message());
      }
      keys.emplace_back(line);
      ++found;
    }
    if (found == 0) {
      return InvalidArgument(
          "server.api_key_file {}: no key in it (expected one key per line; blank lines and "
          "# comments are skipped)",
          path);
    }
  }
  return FromKeys(keys);
}

bool ApiKeys::Check(std::string_view authorization) const {
  if (digests_.empty()) return true;
  std::string_view v = Trim(authorization);
  constexpr std::string_view kScheme = "bearer ";
  bool scheme = v.size() > kScheme.size();
  for (size_t i = 0; scheme && i < kScheme.size(); ++i) {
    scheme = std::tolower(static_cast<unsigned char>(v[i])) == kScheme[i];
  }
  const Digest presented = Sha256(scheme ? Trim(v.substr(kScheme.size())) : std::string_view());
  // Every key is compared, all of each digest: no early exit anywhere.
  unsigned match = 0;
  for (const Digest& d : digests_) {
    unsigned diff = 0;
    for (size_t i = 0; i < d.size(); ++i) diff |= static_cast<unsigned>(d[i] ^ presented[i]);
    match |= static_cast<unsigned>(diff == 0);
  }
  return scheme && match != 0;
}

}  // namespace engram
