// TEMPORARY during parallel development; deleted when cmd_pack.cc lands.
#include <cstdio>
#include "commands.h"
namespace engram::cli {
int RunPack(int, char**) { std::fprintf(stderr, "engram pack: not built yet\n"); return 1; }
}  // namespace engram::cli
