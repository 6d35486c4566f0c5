// TEMPORARY during parallel development; deleted when cmd_bench.cc lands.
#include <cstdio>
#include "commands.h"
namespace engram::cli {
int RunBench(int, char**) { std::fprintf(stderr, "engram bench: not built yet\n"); return 1; }
}  // namespace engram::cli
