// Protection of the files engramd serves from read-only mappings (safetensors weights and
// resident Engram tables) against being changed underneath it.
//
// A mapped file that shrinks (truncated, or rewritten in place by a careless `cp`) makes every
// later read of a page past its new end raise SIGBUS, which kills the process. Registered
// mappings are covered by a SIGBUS handler instead: a fault inside one replaces the rest of
// that mapping with zero pages (the faulting read then sees zeros and the step finishes) and
// marks the file broken. A file whose size or modification time changes while mapped (the
// same bytes may now be other weights) is marked broken by CheckMappedFiles. A broken file is
// sticky: the engine ends the requests of the step that saw it with DATA_LOSS, refuses new
// ones and reports NOT_SERVING, and the operator restarts engramd. Replacing a file by rename
// (what `engram pack` does) leaves the mapped inode intact and is safe.
//
// The registry is process-wide because signal handlers are; a SIGBUS outside every registered
// mapping keeps its default action (the process dies, as before). Thread-safe; the handler
// is async-signal-safe (atomics and mmap only).
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"

namespace engram {

// Covers [base, base + len) of a mapping of `path`; `fd` (owned from here on) is the open file,
// kept for CheckMappedFiles' fstat. Returns a handle for Unregister, or -1 when the registry is
// full (the mapping is then unprotected; logged once).
int RegisterMappedFile(const void* base, size_t len, int fd, const std::string& path);
// Before munmap: the range is no longer covered; the fd is closed.
void UnregisterMappedFile(int handle);

// OK while every registered file is as it was mapped; otherwise (sticky) DATA_LOSS naming the
// first file found broken and how (a SIGBUS in its mapping, or its size or mtime changed).
Status CheckMappedFiles();

// SIGBUS faults absorbed so far (for tests and logs).
uint64_t MappedFileFaults();

}  // namespace engram
