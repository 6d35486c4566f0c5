#include "common/file_read.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace engram {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

const char* KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

Result<std::string> ReadRegularFile(const std::string& path, size_t max_bytes,
                                    std::string_view what) {
  // O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting forever.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) {
    const int err = errno;
    return MakeStatus(err == ENOENT ? StatusCode::kNotFound : StatusCode::kInvalidArgument,
                      "{} {}: cannot open: {}", what, path, std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return InvalidArgument("{} {}: cannot stat: {}", what, path, std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return InvalidArgument("{} {}: is {}, expected a regular file", what, path, KindOf(st.st_mode));
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    return InvalidArgument("{} {}: is {} bytes, more than the {} bytes a {} may have", what, path,
                           static_cast<uint64_t>(st.st_size), max_bytes, what);
  }
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  // Read until EOF, but never past max_bytes + 1 (a file growing while read is refused).
  for (;;) {
    if (got == out.size()) {
      if (out.size() > max_bytes) break;
      out.resize(std::min(max_bytes + 1, out.size() + 4096));
    }
    const ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return InvalidArgument("{} {}: read failed: {}", what, path, std::strerror(errno));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got > max_bytes) {
    return InvalidArgument("{} {}: grew past the {} bytes a {} may have while it was read", what,
                           path, max_bytes, what);
  }
  out.resize(got);
  return out;
}

int JsonNestingDepth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > limit) return deepest;
      }
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
  return deepest;
}

Result<nlohmann::json> ParseJson(std::string_view text, const std::string& origin) {
  if (JsonNestingDepth(text, kMaxJsonDepth) > kMaxJsonDepth) {
    return InvalidArgument("{}: JSON nested deeper than {} levels", origin, kMaxJsonDepth);
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    // e.what(): "[json.exception.parse_error.101] parse error at line 1, column 3: ..."
    return InvalidArgument("{}: not valid JSON: {}", origin, e.what());
  }
}

Result<nlohmann::json> ReadJsonFile(const std::string& path, size_t max_bytes,
                                    std::string_view what) {
  auto text = ReadRegularFile(path, max_bytes, what);
  if (!text.ok()) return text.status();
  return ParseJson(*text, std::string(what) + " " + path);
}

}  // namespace engram
