"""Python's grpcio (Debian) against an engramd with TLS and an API key: the key as
"authorization: Bearer KEY" metadata over a TLS channel trusting the test CA works; no key or a
wrong one is UNAUTHENTICATED; a client that does not trust the CA cannot connect; health needs
no key. The certificates are made by openssl here.

Run by ctest with /usr/bin/python3 (ENGRAMD and ENGRAM_REPO in the environment).
"""

import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engramd_process  # noqa: E402

KEY = "python-key-0123456789"
TIMEOUT_S = 30
_tmp = _certs = _daemon = None
pb = pb_grpc = health_pb = grpc = None


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def setUpModule():
    global _tmp, _certs, _daemon, pb, pb_grpc, health_pb, grpc
    engramd_process.require_grpc()
    import grpc as grpc_module
    grpc = grpc_module
    _tmp = tempfile.TemporaryDirectory(prefix="engram-py-sec-")
    pb, pb_grpc, health_pb, _ = engramd_process.generate_stubs(_tmp.name)
    _certs = tempfile.TemporaryDirectory(prefix="engram-py-certs-")
    d = _certs.name
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=py-ca", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2",
             "-subj", "/CN=other", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
             cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    _daemon = engramd_process.EngramdProcess(server_extra=(
        "  tls:", f'    cert: "{d}/server.pem"', f'    key: "{d}/server.key"',
        f'  api_keys: ["{KEY}"]'))


def tearDownModule():
    if _daemon is not None:
        code = _daemon.stop()
        if code != 0:
            raise AssertionError(f"engramd exited with {code} after SIGTERM")
    for t in (_tmp, _certs):
        if t is not None:
            t.cleanup()


def _channel(ca="ca.pem"):
    with open(os.path.join(_certs.name, ca), "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(_daemon.address, creds)


class PythonTlsAndKeys(unittest.TestCase):
    def test_the_key_over_tls_works(self):
        with _channel() as ch:
            stub = pb_grpc.EngramStub(ch)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT_S,
                                     metadata=(("authorization", f"Bearer {KEY}"),))
            self.assertGreater(info.vocab_size, 0)
            req = pb.GenerateRequest(max_tokens=3, ignore_eos=True)
            req.token_ids.ids.extend([1, 2, 3])
            out = list(stub.Generate(req, timeout=TIMEOUT_S,
                                     metadata=(("authorization", f"Bearer {KEY}"),)))
            self.assertEqual(sum(len(m.token_ids) for m in out), 3)

    def test_no_key_or_a_wrong_key_is_unauthenticated(self):
        with _channel() as ch:
            stub = pb_grpc.EngramStub(ch)
            for md in ((), (("authorization", "Bearer wrong-wrong-wrong-key"),)):
                with self.assertRaises(grpc.RpcError) as e:
                    stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=TIMEOUT_S, metadata=md)
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
                self.assertEqual(e.exception.details(), "missing or invalid API key")

    def test_health_needs_no_key(self):
        with _channel() as ch:
            health = ch.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=health_pb.HealthCheckRequest.SerializeToString,
                                    response_deserializer=health_pb.HealthCheckResponse.FromString)
            self.assertEqual(health(health_pb.HealthCheckRequest(), timeout=TIMEOUT_S).status,
                             health_pb.HealthCheckResponse.SERVING)

    def test_a_client_that_does_not_trust_the_ca_cannot_connect(self):
        with _channel("other.pem") as ch:
            with self.assertRaises(grpc.RpcError) as e:
                pb_grpc.EngramStub(ch).GetModelInfo(
                    pb.GetModelInfoRequest(), timeout=10,
                    metadata=(("authorization", f"Bearer {KEY}"),))
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main()
