// Certificates for the TLS tests, made by openssl (installed by scripts/setup.sh) in a fresh
// temporary directory: a CA, a server certificate for 127.0.0.1 and localhost signed by it,
// a client certificate signed by it, and a second, unrelated CA (a client trusting only that
// one must refuse the server). EC P-256, valid for 2 days. Header-only.
#pragma once

#include <fstream>
#include <string>

#include "shell.h"
#include "temp_dir.h"

namespace engram::testing {

struct TestCerts {
  testutil::TempDir dir;
  bool ok = false;

  TestCerts() {
    const std::string d = dir.path();
    std::ofstream(dir / "san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes ";
    ok = Shell("cd " + d + " && openssl req -x509" + ec +
               "-keyout ca.key -out ca.pem -days 2 -subj /CN=engram-test-ca"
               " && openssl req -x509" +
               ec +
               "-keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca"
               " && openssl req" +
               ec +
               "-keyout server.key -out server.csr -subj /CN=localhost"
               " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
               " -out server.pem -days 2 -extfile san.ext"
               " && openssl req" +
               ec +
               "-keyout client.key -out client.csr -subj /CN=client"
               " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
               " -out client.pem -days 2") == 0;
  }
  // ca.pem, ca.key, other-ca.pem, server.pem, server.key, client.pem, client.key
  std::string path(const std::string& name) const { return dir / name; }
  std::string read(const std::string& name) const { return testutil::ReadFile(dir / name); }
};

}  // namespace engram::testing
