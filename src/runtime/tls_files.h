// The TLS material of server.tls (docs/operations.md "Security"): the PEM files read and
// checked at start, so a wrong file is a clear error naming it instead of a handshake that
// fails later for every client. Used by both listeners (gRPC takes the PEM text; the HTTP
// server hands it to GnuTLS).
#pragma once

#include <optional>
#include <string>

#include "common/status.h"

namespace engram {

struct ServerConfig;

struct TlsFiles {
  std::string cert_pem;       // the server's certificate chain
  std::string key_pem;        // its private key
  std::string client_ca_pem;  // empty: clients are not asked for certificates
};

// nullopt without server.tls. Errors name the key and the file: unreadable (NOT_FOUND,
// PERMISSION_DENIED), not a PEM certificate / private key / CA (INVALID_ARGUMENT), a key
// that does not belong to the certificate (INVALID_ARGUMENT), a certificate already expired
// or not yet valid (FAILED_PRECONDITION, with its dates).
Result<std::optional<TlsFiles>> LoadTlsFiles(const ServerConfig& config);

}  // namespace engram
