// IoUringReader: reads byte ranges of one file (an Engram table's safetensors shard, read in
// place) with io_uring and O_DIRECT, the NVMe tier's I/O path.
//
// Requests are caller-owned completion objects: ReadBatch submits a whole batch (one
// io_uring_submit per round, at most `queue_depth` reads in flight, the rest in waves), widens
// each range to the device's alignment, reads into aligned bounce buffers the reader owns and
// copies exactly the asked-for bytes to `dest`. Short reads are resubmitted for the remainder,
// transient errors (EAGAIN, EINTR, EIO, ...) are retried up to `max_retries` times, and every
// request ends with its own status, so one bad range fails only its request.
//
// Thread safety: none. Use one reader per I/O thread (each owns its ring, fd and buffers).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "common/status.h"

namespace engram {

struct ReaderOptions {
  uint32_t queue_depth = 32;             // reads in flight at once (ring size), 1..4096
  uint32_t max_request_bytes = 1 << 20;  // largest single request; sizes the bounce buffers
  int max_retries = 3;                   // resubmissions of a failed read before giving up
  // Filesystems without O_DIRECT (EINVAL at open): false -> FAILED_PRECONDITION, true -> fall
  // back to buffered reads (logged as a warning).
  bool allow_buffered = false;
  // Alignment of widened reads; 0 = probe (BLKSSZGET, statx DIO alignment, st_blksize, 4096).
  uint32_t alignment = 0;
  // Test hook, called when each read completes with the file range that read covered (aligned)
  // and its attempt number for the request (0 first). Returns 0 to keep the real result, a
  // negative errno to replace it with that error, or a positive length to truncate the read
  // to that many bytes (a short read).
  std::function<int(uint64_t offset, uint32_t length, int attempt)> fault_hook;
};

// One read; the caller owns it (and `dest`) until ReadBatch returns.
struct ReadRequest {
  uint64_t offset = 0;      // file offset, any alignment
  uint32_t length = 0;      // bytes, <= ReaderOptions::max_request_bytes
  void* dest = nullptr;     // receives exactly `length` bytes
  Status status;            // out: OK, OUT_OF_RANGE (past EOF), UNAVAILABLE (I/O error), ...
  uint32_t bytes_read = 0;  // out: `length` on success, else 0
};

struct ReaderStats {
  uint64_t reads_submitted = 0;  // SQEs, resubmissions included
  uint64_t retries = 0;          // resubmissions after an error or a read that made no progress
  uint64_t short_reads = 0;      // resubmissions for the remainder of a short read
};

class IoUringReader {
 public:
  // Opens `path` (regular file or block device) with O_RDONLY|O_DIRECT and sets up the ring.
  // NOT_FOUND / PERMISSION_DENIED for the file, FAILED_PRECONDITION when O_DIRECT is refused
  // (unless allow_buffered), UNAVAILABLE when io_uring is missing or disabled.
  static Result<std::unique_ptr<IoUringReader>> Open(const std::string& path,
                                                     const ReaderOptions& options = {});
  ~IoUringReader();
  IoUringReader(const IoUringReader&) = delete;
  IoUringReader& operator=(const IoUringReader&) = delete;

  // Reads every request (see the file comment). Returns OK when all succeeded, else the first
  // failing request's status; each request's own `status` says how it ended.
  Status ReadBatch(std::span<ReadRequest*> reqs);

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  uint32_t alignment() const { return alignment_; }
  bool direct_io() const { return direct_io_; }
  bool uses_read_opcode() const { return use_read_op_; }  // false: IORING_OP_READV fallback
  const ReaderStats& stats() const { return stats_; }

 private:
  struct Ring;
  struct Slot;
  IoUringReader();
  void Prep(Slot& slot);
  void Complete(Slot& slot, int res, Status& first_error);
  void Finish(Slot& slot, Status status, Status& first_error);

  std::string path_;
  ReaderOptions options_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  uint32_t alignment_ = 4096;
  bool direct_io_ = true;
  bool use_read_op_ = true;
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<std::byte, void (*)(void*)> buffers_;  // queue_depth slots, aligned
  std::unique_ptr<Slot[]> slots_;
  std::unique_ptr<uint32_t[]> free_;  // stack of free slot indices
  uint32_t num_free_ = 0;
  uint32_t slot_bytes_ = 0;
  ReaderStats stats_;
  bool broken_ = false;  // the ring failed: later batches fail fast
};

}  // namespace engram
