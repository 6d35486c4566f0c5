// Shared options of the offline commands: --model DIR|synth:PRESET, --backend, --threads,
// --kv-tokens, --max-seqs, --cuda-graphs on|off (decode steps as CUDA graphs), --weights
// bf16|int8 (the Linear weight format; int8 quantizes at load, BackendOptions::weights).
#pragma once

#include <memory>
#include <set>
#include <string>

#include "args.h"
#include "runtime/engine.h"

namespace engram::cli {

// The option names OpenEngine reads (merge into a command's accepted set).
std::set<std::string> EngineOptionNames();
Result<std::unique_ptr<Engine>> OpenEngine(const Args& args);
// Prints "engram <cmd>: <status>" to stderr; returns 2 for INVALID_ARGUMENT usage errors
// detected while parsing, 1 otherwise.
int Fail(const char* cmd, const Status& st);

}  // namespace engram::cli
