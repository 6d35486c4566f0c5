// TEMPORARY during parallel development; deleted when cmd_logits.cc lands.
#include <cstdio>
#include "commands.h"
namespace engram::cli {
int RunLogits(int, char**) { std::fprintf(stderr, "engram logits: not built yet\n"); return 1; }
}  // namespace engram::cli
