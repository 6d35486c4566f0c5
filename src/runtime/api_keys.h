// ApiKeys: the keys a client must present as "authorization: Bearer KEY" on the gRPC and HTTP
// listeners (server.api_keys and server.api_key_file, docs/operations.md "Security").
// Checking compares SHA-256 digests of the presented key with every configured key's in
// constant time, so the time taken reveals neither which key nor how long one is.
//
// Thread safety: immutable after Load; Check may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace engram {

struct ServerConfig;

// A key's form: 16..256 printable ASCII characters, no spaces (what an Authorization header
// carries unchanged). The error never contains the key.
Status CheckApiKey(std::string_view key);

class ApiKeys {
 public:
  ApiKeys() = default;  // no keys: every request is allowed
  // server.api_keys plus the lines of server.api_key_file (blank lines and lines starting
  // with '#' skipped; surrounding spaces trimmed). Errors name the file and the line, never
  // the key: NOT_FOUND / PERMISSION_DENIED for an unreadable file, INVALID_ARGUMENT for a
  // malformed key or a file without any key.
  static Result<ApiKeys> Load(const ServerConfig& config);
  static Result<ApiKeys> FromKeys(const std::vector<std::string>& keys);

  bool enabled() const { return !digests_.empty(); }
  size_t size() const { return digests_.size(); }
  // `authorization` is the header's value: "Bearer KEY" (the scheme case-insensitive).
  bool Check(std::string_view authorization) const;

 private:
  using Digest = std::array<uint8_t, 32>;
  std::vector<Digest> digests_;
};

}  // namespace engram
