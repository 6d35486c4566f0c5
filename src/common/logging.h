// Logging: spdlog's default logger, configured once by the binary's main().
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

#include "common/status.h"

namespace engram {

// Sets the level from "trace|debug|info|warn|error|critical|off"; error names the value.
Status SetLogLevel(std::string_view level);

}  // namespace engram
