"""A Python gRPC client (Debian's python3-grpcio) against a real engramd: streaming Generate,
Tokenize/Detokenize, GetModelInfo, GetStats, error statuses, health and server reflection.

Run by ctest with /usr/bin/python3 (ENGRAMD and ENGRAM_REPO in the environment). Fails (does not
skip) when grpcio is missing.
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engramd_process  # noqa: E402

RPC_TIMEOUT_S = 30

_tmp = None
_daemon = None
pb = pb_grpc = health_pb = refl_pb = None
grpc = None


def setUpModule():
    global _tmp, _daemon, pb, pb_grpc, health_pb, refl_pb, grpc
    engramd_process.require_grpc()
    import grpc as grpc_module
    grpc = grpc_module
    _tmp = tempfile.TemporaryDirectory(prefix="engram-py-stubs-")
    pb, pb_grpc, health_pb, refl_pb = engramd_process.generate_stubs(_tmp.name)
    _daemon = engramd_process.EngramdProcess()


def tearDownModule():
    if _daemon is not None:
        code = _daemon.stop()
        if code != 0:
            raise AssertionError(f"engramd exited with {code} after SIGTERM")
    if _tmp is not None:
        _tmp.cleanup()


class PythonClient(unittest.TestCase):
    def setUp(self):
        self.channel = grpc.insecure_channel(_daemon.address)
        grpc.channel_ready_future(self.channel).result(timeout=RPC_TIMEOUT_S)
        self.stub = pb_grpc.EngramStub(self.channel)

    def tearDown(self):
        self.channel.close()

    def generate(self, request, timeout=RPC_TIMEOUT_S):
        return list(self.stub.Generate(request, timeout=timeout))

    def test_streaming_generate_text(self):
        req = pb.GenerateRequest(text="Hello from Python".encode(), max_tokens=8, ignore_eos=True)
        msgs = self.generate(req)
        self.assertGreaterEqual(len(msgs), 2, "tokens should stream")
        ids = [t for m in msgs for t in m.token_ids]
        self.assertEqual(len(ids), 8)
        self.assertEqual(msgs[-1].finish_reason, pb.FINISH_REASON_LENGTH)
        for m in msgs[:-1]:
            self.assertEqual(m.finish_reason, pb.FINISH_REASON_UNSPECIFIED)
        usage = msgs[-1].usage
        self.assertEqual(usage.completion_tokens, 8)
        self.assertGreater(usage.prompt_tokens, 0)
        self.assertGreater(usage.time_to_first_token_s, 0)
        self.assertTrue(all(m.request_id == msgs[0].request_id for m in msgs))

    def test_generate_token_ids_greedy_repeats(self):
        req = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[5, 50, 500]), max_tokens=6,
                                 ignore_eos=True)
        a = [t for m in self.generate(req) for t in m.token_ids]
        b = [t for m in self.generate(req) for t in m.token_ids]
        self.assertEqual(len(a), 6)
        self.assertEqual(a, b)

    def test_tokenize_detokenize_round_trip(self):
        text = "Round trip: héllo, 世界 🌍"
        ids = self.stub.Tokenize(pb.TokenizeRequest(text=text.encode()), timeout=RPC_TIMEOUT_S).token_ids
        self.assertGreater(len(ids), 3)
        back = self.stub.Detokenize(pb.DetokenizeRequest(token_ids=ids), timeout=RPC_TIMEOUT_S)
        self.assertEqual(back.text, text)

    def test_model_info(self):
        info = self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(info.architecture, "llama")
        self.assertEqual(info.max_context, 2048)
        self.assertTrue(info.has_tokenizer)
        self.assertGreater(info.vocab_size, 100000)
        self.assertTrue(info.HasField("engram"))
        self.assertEqual(list(info.engram.layer_ids), [1])
        self.assertTrue(info.backend.startswith("cpu"))

    def test_stats_count_a_request(self):
        before = self.stub.GetStats(pb.GetStatsRequest(), timeout=RPC_TIMEOUT_S)
        self.generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 2]), max_tokens=3,
                                         ignore_eos=True))
        after = self.stub.GetStats(pb.GetStatsRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(after.requests_received, before.requests_received + 1)
        self.assertEqual(after.requests_finished, before.requests_finished + 1)
        self.assertEqual(after.finished_by_reason["length"],
                         before.finished_by_reason["length"] + 1)
        self.assertEqual(after.generation_tokens, before.generation_tokens + 3)
        self.assertGreater(after.kv_blocks_total, 0)

    def test_bad_requests_get_status_codes(self):
        cases = [
            (pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1]), max_tokens=2,
                                sampling=pb.SamplingParams(temperature=-1)),
             grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
            (pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 10**9]), max_tokens=2),
             grpc.StatusCode.OUT_OF_RANGE, "token_ids[1]"),
            (pb.GenerateRequest(text=b"", max_tokens=2), grpc.StatusCode.INVALID_ARGUMENT, "prompt"),
        ]
        for req, code, field in cases:
            with self.subTest(field=field):
                with self.assertRaises(grpc.RpcError) as cm:
                    self.generate(req)
                self.assertEqual(cm.exception.code(), code, cm.exception.details())
                self.assertIn(field, cm.exception.details())
        # Still serving.
        msgs = self.generate(pb.GenerateRequest(text=b"ok", max_tokens=2, ignore_eos=True))
        self.assertEqual(sum(len(m.token_ids) for m in msgs), 2)

    def test_cancel_mid_stream(self):
        call = self.stub.Generate(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[3, 4]),
                                                     max_tokens=2000, ignore_eos=True),
                                  timeout=RPC_TIMEOUT_S)
        seen = 0
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in call:
                seen += 1
                if seen == 3:
                    call.cancel()
        self.assertEqual(cm.exception.code(), grpc.StatusCode.CANCELLED)

    def test_health_check_serving(self):
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb.HealthCheckResponse.FromString)
        resp = check(health_pb.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT_S)
        self.assertEqual(resp.status, health_pb.HealthCheckResponse.SERVING)

    def test_reflection_lists_the_service(self):
        info = self.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=refl_pb.ServerReflectionRequest.SerializeToString,
            response_deserializer=refl_pb.ServerReflectionResponse.FromString)
        reqs = [refl_pb.ServerReflectionRequest(list_services=""),
                refl_pb.ServerReflectionRequest(file_containing_symbol="engram.v1.Engram")]
        responses = list(info(iter(reqs), timeout=RPC_TIMEOUT_S))
        self.assertEqual(len(responses), 2)
        names = [s.name for s in responses[0].list_services_response.service]
        self.assertIn("engram.v1.Engram", names)
        self.assertIn("grpc.health.v1.Health", names)
        from google.protobuf import descriptor_pb2
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in responses[1].file_descriptor_response.file_descriptor_proto]
        services = [s.name for f in files if f.package == "engram.v1" for s in f.service]
        self.assertIn("Engram", services)


if __name__ == "__main__":
    unittest.main()
