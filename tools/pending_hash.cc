// TEMPORARY during parallel development; deleted when cmd_hash.cc lands.
#include <cstdio>
#include "commands.h"
namespace engram::cli {
int RunHash(int, char**) { std::fprintf(stderr, "engram hash: not built yet\n"); return 1; }
}  // namespace engram::cli
