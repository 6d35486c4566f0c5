// Fuzzes engram_checksums.json parsing (ParseTableChecksums). A file that parses must
// round-trip through TableChecksumsJson, and its chunk_bytes is used to checksum the input
// itself on one and on two threads, which must agree (chunking never depends on threads).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_common.h"
#include "model/table_checksum.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  engram::fuzz::QuietLogs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto sums = engram::ParseTableChecksums(text, "engram_checksums.json");
  engram::fuzz::Note("ParseTableChecksums", sums.status());
  if (!sums.ok()) return 0;
  const std::string json = engram::TableChecksumsJson(*sums);
  auto again = engram::ParseTableChecksums(json, "round trip");
  if (!again.ok()) {
    engram::fuzz::Fail("TableChecksumsJson output does not parse: " + again.status().ToString() +
                       "\n" + json);
  }
  if (again->chunk_bytes != sums->chunk_bytes || again->tensors != sums->tensors) {
    engram::fuzz::Fail("checksums change on a round trip:\n" + json);
  }
  const size_t chunk = static_cast<size_t>(sums->chunk_bytes);
  auto one = engram::ChecksumBytes(data, size, chunk, 1);
  auto two = engram::ChecksumBytes(data, size, chunk, 2);
  if (one.ok() != two.ok() || (one.ok() && *one != *two)) {
    engram::fuzz::Fail("ChecksumBytes differs between 1 and 2 threads, chunk_bytes " +
                       std::to_string(chunk));
  }
  return 0;
}
