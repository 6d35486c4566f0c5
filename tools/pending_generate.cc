// TEMPORARY during parallel development; deleted when cmd_generate.cc lands.
#include <cstdio>
#include "commands.h"
namespace engram::cli {
int RunGenerate(int, char**) { std::fprintf(stderr, "engram generate: not built yet\n"); return 1; }
}  // namespace engram::cli
