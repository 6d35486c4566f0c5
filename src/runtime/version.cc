// Build identification shared by engramd and the engram CLI.
#include "runtime/version.h"

namespace engram {

const char* Version() { return "0.1.0"; }

}  // namespace engram
