// The `engram` CLI's commands; each returns the process exit code (0 ok, 1 runtime error,
// 2 usage error). main.cc dispatches on argv[1].
#pragma once

namespace engram::cli {

int RunHash(int argc, char** argv);      // engram hash --vectors FILE.json
int RunPack(int argc, char** argv);      // engram pack synth / checksum / verify ...
int RunPackQuantize(int argc, char** argv);  // engram pack quantize --model DIR --out DIR2
int RunLogits(int argc, char** argv);    // engram logits --model DIR --ids ... --out FILE.npy
int RunGenerate(int argc, char** argv);  // engram generate --model DIR --prompt-ids ...
int RunBench(int argc, char** argv);     // engram bench forward|kernels ...
// gRPC clients of a running engramd (cmd_client.cc, cmd_bench_serve.cc).
int RunGenerateClient(int argc, char** argv);  // engram generate --server ADDR ...
int RunStats(int argc, char** argv);           // engram stats --server ADDR [--json]
int RunBenchServe(int argc, char** argv);      // engram bench serve --server ADDR ...
int RunBenchOffload(int argc, char** argv);    // engram bench offload --model DIR ...
int RunBenchSoak(int argc, char** argv);       // engram bench soak [--minutes M] [--streams N]
// The tokenizer, locally (cmd_tokenize.cc).
int RunTokenize(int argc, char** argv);    // engram tokenize --tokenizer FILE --text T
int RunDetokenize(int argc, char** argv);  // engram detokenize --tokenizer FILE --ids 1,2

}  // namespace engram::cli
