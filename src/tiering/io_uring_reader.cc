#include "tiering/io_uring_reader.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/logging.h"

namespace engram {
namespace {

uint64_t AlignDown(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
bool IsPow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Errors worth resubmitting: transient ones, and EIO (a flaky path or a media retry).
bool Retryable(int err) {
  return err == EAGAIN || err == EINTR || err == EIO || err == EBUSY || err == ECANCELED ||
         err == ENOMEM;
}

// Logical block size for O_DIRECT: the device's sector size, else the filesystem's DIO
// alignment, else its block size, else 4096.
uint32_t ProbeAlignment(int fd, const struct stat& st) {
  if (S_ISBLK(st.st_mode)) {
    int ssz = 0;
    if (ioctl(fd, BLKSSZGET, &ssz) == 0 && ssz > 0 && IsPow2(static_cast<uint64_t>(ssz))) {
      return static_cast<uint32_t>(ssz);
    }
    return 4096;
  }
#ifdef STATX_DIOALIGN
  struct statx sx {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN) &&
      IsPow2(sx.stx_dio_offset_align)) {
    // Use the larger of the offset and memory alignment (bounce buffers are page aligned
    // anyway); at least 512.
    uint32_t a = sx.stx_dio_offset_align;
    if (a < 512) a = 512;
    return a;
  }
#endif
  const uint64_t blk = static_cast<uint64_t>(st.st_blksize);
  if (IsPow2(blk) && blk >= 512 && blk <= 65536) return static_cast<uint32_t>(blk);
  return 4096;
}

}  // namespace

// RAII for the ring: torn down (in-flight reads cancelled or waited for) on destruction.
struct IoUringReader::Ring {
  io_uring ring{};
  bool initialized = false;
  ~Ring() {
    if (initialized) io_uring_queue_exit(&ring);
  }
};

// One in-flight read: a request plus its widened range and its slice of the bounce buffers.
struct IoUringReader::Slot {
  ReadRequest* req = nullptr;
  std::byte* buf = nullptr;  // slot_bytes_, aligned
  uint64_t aligned_off = 0;  // widened start
  uint32_t aligned_len = 0;  // widened length
  uint32_t done = 0;         // bytes of the widened range already read (aligned)
  uint32_t sub_len = 0;      // length of the read now in flight (starts at aligned_off + done)
  int attempt = 0;
  int retries = 0;
  iovec iov{};
};

IoUringReader::IoUringReader() : buffers_(nullptr, std::free) {}

IoUringReader::~IoUringReader() {
  ring_.reset();  // before the buffers and fd it may still reference
  if (fd_ >= 0) close(fd_);
}

Result<std::unique_ptr<IoUringReader>> IoUringReader::Open(const std::string& path,
                                                           const ReaderOptions& options) {
  if (options.queue_depth == 0 || options.queue_depth > 4096) {
    return InvalidArgument("IoUringReader: queue_depth {} must be in [1, 4096]",
                           options.queue_depth);
  }
  if (options.max_request_bytes == 0 || options.max_request_bytes > (1u << 30)) {
    return InvalidArgument("IoUringReader: max_request_bytes {} must be in [1, 1 GiB]",
                           options.max_request_bytes);
  }
  if (options.max_retries < 0) {
    return InvalidArgument("IoUringReader: max_retries {} must be >= 0", options.max_retries);
  }
  if (options.alignment != 0 && (!IsPow2(options.alignment) || options.alignment < 512)) {
    return InvalidArgument("IoUringReader: alignment {} must be a power of two >= 512",
                           options.alignment);
  }

  std::unique_ptr<IoUringReader> r(new IoUringReader());
  r->path_ = path;
  r->options_ = options;

  // The file first: a missing file is NOT_FOUND even where io_uring is unavailable.
  r->fd_ = open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (r->fd_ < 0 && errno == EINVAL) {
    if (!options.allow_buffered) {
      return FailedPrecondition(
          "{}: the filesystem does not support O_DIRECT (open returned EINVAL); the NVMe tier "
          "reads with O_DIRECT (set allow_buffered to fall back to buffered reads)",
          path);
    }
    spdlog::warn("{}: O_DIRECT is unsupported on this filesystem; falling back to buffered reads",
                 path);
    r->direct_io_ = false;
    r->fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (r->fd_ < 0) {
    const int err = errno;
    const StatusCode code = err == ENOENT                     ? StatusCode::kNotFound
                            : (err == EACCES || err == EPERM) ? StatusCode::kPermissionDenied
                                                              : StatusCode::kUnavailable;
    return ErrnoStatus(code, "open " + path, err);
  }
  struct stat st {};
  if (fstat(r->fd_, &st) != 0) return ErrnoStatus(StatusCode::kUnavailable, "fstat " + path, errno);
  if (S_ISREG(st.st_mode)) {
    r->file_size_ = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (ioctl(r->fd_, BLKGETSIZE64, &bytes) != 0) {
      return ErrnoStatus(StatusCode::kUnavailable, "BLKGETSIZE64 " + path, errno);
    }
    r->file_size_ = bytes;
  } else {
    return InvalidArgument("{}: not a regular file or block device", path);
  }
  r->alignment_ = options.alignment != 0 ? options.alignment : ProbeAlignment(r->fd_, st);

  // The ring, probed with a clear message (sandboxes answer ENOSYS or EPERM).
  r->ring_ = std::make_unique<Ring>();
  const int ret = io_uring_queue_init(options.queue_depth, &r->ring_->ring, 0);
  if (ret < 0) {
    return Unavailable(
        "io_uring is not available: {}; the NVMe tier needs Linux >= 5.6 with io_uring "
        "enabled (check kernel.io_uring_disabled and the sandbox's seccomp policy)",
        std::strerror(-ret));
  }
  r->ring_->initialized = true;
  if (io_uring_probe* probe = io_uring_get_probe_ring(&r->ring_->ring)) {
    r->use_read_op_ = io_uring_opcode_supported(probe, IORING_OP_READ) != 0;
    io_uring_free_probe(probe);
  } else {
    r->use_read_op_ = false;  // no probe support (< 5.6): READV exists since 5.1
  }
  if (!r->use_read_op_) spdlog::info("{}: io_uring lacks IORING_OP_READ; using READV", path);

  // Bounce buffers: one aligned slice per slot, allocated once. Widening adds less than one
  // alignment unit at each end.
  const uint64_t slot_bytes = AlignUp(options.max_request_bytes, r->alignment_) + r->alignment_;
  const uint64_t mem_align = r->alignment_ > 4096 ? r->alignment_ : 4096;
  const uint64_t total = AlignUp(slot_bytes * options.queue_depth, mem_align);
  r->buffers_.reset(static_cast<std::byte*>(std::aligned_alloc(mem_align, total)));
  if (!r->buffers_) {
    return ResourceExhausted("IoUringReader: cannot allocate {} bytes of bounce buffers", total);
  }
  r->slot_bytes_ = static_cast<uint32_t>(slot_bytes);
  r->slots_ = std::make_unique<Slot[]>(options.queue_depth);
  r->free_ = std::make_unique<uint32_t[]>(options.queue_depth);
  for (uint32_t i = 0; i < options.queue_depth; ++i) {
    r->slots_[i].buf = r->buffers_.get() + i * slot_bytes;
    r->free_[i] = options.queue_depth - 1 - i;
  }
  r->num_free_ = options.queue_depth;
  return r;
}

void IoUringReader::Prep(Slot& slot) {
  // At most queue_depth slots are busy and the SQ has queue_depth entries, so this never fails.
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_->ring);
  const uint64_t off = slot.aligned_off + slot.done;
  slot.sub_len = slot.aligned_len - slot.done;
  std::byte* dst = slot.buf + slot.done;
  if (use_read_op_) {
    io_uring_prep_read(sqe, fd_, dst, slot.sub_len, off);
  } else {
    slot.iov = {dst, slot.sub_len};
    io_uring_prep_readv(sqe, fd_, &slot.iov, 1, off);
  }
  io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(&slot - slots_.get()));
  ++stats_.reads_submitted;
}

void IoUringReader::Finish(Slot& slot, Status status, Status& first_error) {
  if (!status.ok() && first_error.ok()) first_error = status;
  slot.req->status = std::move(status);
  slot.req = nullptr;
  free_[num_free_++] = static_cast<uint32_t>(&slot - slots_.get());
}

void IoUringReader::Complete(Slot& slot, int res, Status& first_error) {
  ReadRequest& req = *slot.req;
  const int attempt = slot.attempt++;
  if (options_.fault_hook) {
    const int injected = options_.fault_hook(slot.aligned_off + slot.done, slot.sub_len, attempt);
    if (injected < 0) {
      res = injected;
    } else if (injected > 0 && injected < res) {
      res = injected;
    }
  }
  if (res < 0) {
    const int err = -res;
    if (Retryable(err) && slot.retries < options_.max_retries) {
      ++slot.retries;
      ++stats_.retries;
      Prep(slot);
      return;
    }
    Finish(slot,
           Unavailable("{}: read at offset {} (length {}) failed after {} attempt(s): {}", path_,
                       req.offset, req.length, slot.attempt, std::strerror(err)),
           first_error);
    return;
  }
  if (res == 0) {  // EOF before the range was covered (the file shrank under us)
    Finish(slot,
           OutOfRange("{}: read [{}, {}) hit the end of the file at {}", path_, req.offset,
                      req.offset + req.length, slot.aligned_off + slot.done),
           first_error);
    return;
  }
  const uint64_t have = slot.done + static_cast<uint64_t>(res);
  const uint64_t need = req.offset + req.length - slot.aligned_off;
  if (have >= need) {
    std::memcpy(req.dest, slot.buf + (req.offset - slot.aligned_off), req.length);
    req.bytes_read = req.length;
    Finish(slot, Status::Ok(), first_error);
    return;
  }
  // Short read: resume at the aligned position at or below what arrived (O_DIRECT needs it).
  const uint32_t resume = static_cast<uint32_t>(AlignDown(have, alignment_));
  if (resume == slot.done) {  // no aligned progress: counts against the retry budget
    if (slot.retries >= options_.max_retries) {
      Finish(slot,
             Unavailable("{}: read at offset {} (length {}) made no progress after {} short "
                         "read(s)",
                         path_, req.offset, req.length, slot.attempt),
             first_error);
      return;
    }
    ++slot.retries;
    ++stats_.retries;
  } else {
    ++stats_.short_reads;
  }
  slot.done = resume;
  Prep(slot);
}

Status IoUringReader::ReadBatch(std::span<ReadRequest*> reqs) {
  if (broken_) {
    const Status s =
        FailedPrecondition("{}: the reader's io_uring failed earlier; reopen it", path_);
    for (ReadRequest* r : reqs) r->status = s;
    return s;
  }
  Status first_error;
  size_t next = 0;
  const uint32_t depth = options_.queue_depth;
  while (next < reqs.size() || num_free_ < depth) {
    // Fill free slots with new requests; resubmissions were prepped while reaping.
    while (num_free_ > 0 && next < reqs.size()) {
      ReadRequest& req = *reqs[next++];
      req.bytes_read = 0;
      req.status = Status::Ok();
      Status bad;
      if (req.length > options_.max_request_bytes) {
        bad = InvalidArgument("{}: read of {} bytes at offset {} exceeds max_request_bytes {}",
                              path_, req.length, req.offset, options_.max_request_bytes);
      } else if (req.offset > file_size_ || req.length > file_size_ - req.offset) {
        bad = OutOfRange("{}: read [{}, {}) is past the end of the file ({} bytes)", path_,
                         req.offset, req.offset + req.length, file_size_);
      } else if (req.dest == nullptr && req.length > 0) {
        bad = InvalidArgument("{}: read at offset {} has no destination", path_, req.offset);
      }
      if (!bad.ok()) {
        if (first_error.ok()) first_error = bad;
        req.status = std::move(bad);
        continue;
      }
      if (req.length == 0) continue;
      Slot& slot = slots_[free_[--num_free_]];
      slot.req = &req;
      slot.aligned_off = AlignDown(req.offset, alignment_);
      slot.aligned_len =
          static_cast<uint32_t>(AlignUp(req.offset + req.length, alignment_) - slot.aligned_off);
      slot.done = 0;
      slot.attempt = 0;
      slot.retries = 0;
      Prep(slot);
    }
    if (num_free_ == depth) break;  // nothing in flight (the rest were invalid)

    // One submit for everything prepped, then reap whatever has completed.
    int ret;
    do {
      ret = io_uring_submit_and_wait(&ring_->ring, 1);
    } while (ret == -EINTR);
    if (ret < 0 && ret != -EAGAIN && ret != -EBUSY) {
      // The ring itself failed: fail what is still in flight; the bounce buffers stay valid
      // until the ring is torn down, so late completions are harmless.
      const Status s = Unavailable("{}: io_uring_submit failed: {}", path_, std::strerror(-ret));
      for (uint32_t i = 0; i < depth; ++i) {
        if (slots_[i].req != nullptr) Finish(slots_[i], s, first_error);
      }
      for (; next < reqs.size(); ++next) reqs[next]->status = s;
      broken_ = true;
      return first_error;
    }
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_->ring, head, cqe) {
      ++seen;
      Slot& slot = slots_[io_uring_cqe_get_data64(cqe)];
      if (slot.req != nullptr) Complete(slot, cqe->res, first_error);  // else: after a failure
    }
    io_uring_cq_advance(&ring_->ring, seen);
  }
  return first_error;
}

}  // namespace engram
