// The `engram` CLI's commands; each returns the process exit code (0 ok, 1 runtime error,
// 2 usage error). main.cc dispatches on argv[1].
#pragma once

namespace engram::cli {

int RunHash(int argc, char** argv);      // engram hash --vectors FILE.json
int RunPack(int argc, char** argv);      // engram pack synth ...
int RunLogits(int argc, char** argv);    // engram logits --model DIR --ids ... --out FILE.npy
int RunGenerate(int argc, char** argv);  // engram generate --model DIR --prompt-ids ...
int RunBench(int argc, char** argv);     // engram bench forward|kernels ...

}  // namespace engram::cli
