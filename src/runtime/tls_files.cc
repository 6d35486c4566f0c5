#include "runtime/tls_files.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <ctime>
#include <memory>

#include "common/file_read.h"
#include "runtime/server_config.h"

namespace engram {
namespace {

constexpr size_t kMaxPem = 1 << 20;

gnutls_datum_t Datum(const std::string& s) {
  return gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
                        static_cast<unsigned>(s.size())};
}

// The certificates in a PEM file (at least one).
Status CheckCertificates(const std::string& pem, const std::string& key, const std::string& path,
                         bool check_dates) {
  gnutls_x509_crt_t* list = nullptr;
  unsigned n = 0;
  const gnutls_datum_t d = Datum(pem);
  const int rc = gnutls_x509_crt_list_import2(&list, &n, &d, GNUTLS_X509_FMT_PEM, 0);
  if (rc < 0 || n == 0) {
    return InvalidArgument(
        "{} {}: not a PEM certificate ({}; expected \"-----BEGIN "
        "CERTIFICATE-----\" blocks)",
        key, path, rc < 0 ? gnutls_strerror(rc) : "no certificate in it");
  }
  Status st = Status::Ok();
  if (check_dates) {
    const time_t now = std::time(nullptr);
    const time_t from = gnutls_x509_crt_get_activation_time(list[0]);
    const time_t until = gnutls_x509_crt_get_expiration_time(list[0]);
    auto date = [](time_t t) {
      char buf[32];
      std::tm tm{};
      gmtime_r(&t, &tm);
      std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
      return std::string(buf);
    };
    if (until != static_cast<time_t>(-1) && now > until) {
      st = FailedPrecondition("{} {}: the certificate expired at {}", key, path, date(until));
    } else if (from != static_cast<time_t>(-1) && now < from) {
      st =
          FailedPrecondition("{} {}: the certificate is valid only from {}", key, path, date(from));
    }
  }
  for (unsigned i = 0; i < n; ++i) gnutls_x509_crt_deinit(list[i]);
  gnutls_free(list);
  return st;
}

}  // namespace

Result<std::optional<TlsFiles>> LoadTlsFiles(const ServerConfig& config) {
  const auto& t = config.server.tls;
  if (!t.enabled()) return std::optional<TlsFiles>();
  TlsFiles f;
  ENGRAM_ASSIGN_OR_RETURN(f.cert_pem, ReadRegularFile(t.cert, kMaxPem, "server.tls.cert"));
  ENGRAM_ASSIGN_OR_RETURN(f.key_pem, ReadRegularFile(t.key, kMaxPem, "server.tls.key"));
  ENGRAM_RETURN_IF_ERROR(CheckCertificates(f.cert_pem, "server.tls.cert", t.cert, true));
  gnutls_x509_privkey_t pk = nullptr;
  gnutls_x509_privkey_init(&pk);
  const gnutls_datum_t kd = Datum(f.key_pem);
  const int krc = gnutls_x509_privkey_import2(pk, &kd, GNUTLS_X509_FMT_PEM, nullptr, 0);
  gnutls_x509_privkey_deinit(pk);
  if (krc < 0) {
    return InvalidArgument("server.tls.key {}: not an unencrypted PEM private key ({})", t.key,
                           gnutls_strerror(krc));
  }
  // The key must belong to the certificate: what GnuTLS checks when it loads the pair.
  gnutls_certificate_credentials_t cred = nullptr;
  gnutls_certificate_allocate_credentials(&cred);
  const gnutls_datum_t cd = Datum(f.cert_pem);
  const int prc = gnutls_certificate_set_x509_key_mem(cred, &cd, &kd, GNUTLS_X509_FMT_PEM);
  gnutls_certificate_free_credentials(cred);
  if (prc < 0) {
    return InvalidArgument("server.tls.key {} does not fit server.tls.cert {} ({})", t.key, t.cert,
                           gnutls_strerror(prc));
  }
  if (!t.client_ca.empty()) {
    ENGRAM_ASSIGN_OR_RETURN(f.client_ca_pem,
                            ReadRegularFile(t.client_ca, kMaxPem, "server.tls.client_ca"));
    ENGRAM_RETURN_IF_ERROR(
        CheckCertificates(f.client_ca_pem, "server.tls.client_ca", t.client_ca, false));
  }
  return std::optional<TlsFiles>(std::move(f));
}

}  // namespace engram
