#include "common/logging.h"

namespace engram {

Status SetLogLevel(std::string_view level) {
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return InvalidArgument(
        "log level \"{}\" is not one of trace, debug, info, warn, error, critical, off", level);
  }
  spdlog::set_level(lvl);
  return Status::Ok();
}

}  // namespace engram
