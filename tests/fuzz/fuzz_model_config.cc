// Fuzzes config.json parsing as ModelConfig::Load does it: engram::ParseJson (depth and number
// limits) then ModelConfig::FromJson. A config that parses must round-trip: ToJson ->
// FromJson succeeds and gives the same ToJson (the contract config.h states).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/file_read.h"
#include "fuzz_common.h"
#include "model/config.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engram::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto j = engram::ParseJson(text, "config.json");
  engram::fuzz::Note("ParseJson", j.status());
  if (!j.ok()) return 0;
  auto config = engram::ModelConfig::FromJson(*j, "config.json");
  engram::fuzz::Note("FromJson", config.status());
  if (!config.ok()) return 0;
  const nlohmann::json out = config->ToJson();
  auto again = engram::ModelConfig::FromJson(out, "round trip");
  if (!again.ok()) {
    engram::fuzz::Fail("ToJson of a parsed config does not parse: " + again.status().ToString() +
                       "\n" + out.dump());
  }
  if (again->ToJson() != out) {
    engram::fuzz::Fail("config changes on a round trip:\n" + out.dump() + "\n" +
                       again->ToJson().dump());
  }
  return 0;
}
