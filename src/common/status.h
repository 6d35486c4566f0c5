// Status and Result<T>: the error currency at every module boundary of engramd.
// No exception crosses a module or the gRPC edge; functions that can fail return these.
// Codes mirror gRPC's canonical codes so the service maps them one to one.
#pragma once

#include <fmt/format.h>

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace engram {

enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: message"
  std::string ToString() const;
  // Returns a copy whose message is "context: message" (same code).
  Status WithContext(const std::string& context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Holds either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be OK

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

template <typename... Args>
Status MakeStatus(StatusCode code, fmt::format_string<Args...> f, Args&&... args) {
  return Status(code, fmt::format(f, std::forward<Args>(args)...));
}
#define ENGRAM_STATUS_HELPER(Name, Code)                                          \
  template <typename... Args>                                                     \
  Status Name(fmt::format_string<Args...> f, Args&&... args) {                    \
    return Status(StatusCode::Code, fmt::format(f, std::forward<Args>(args)...)); \
  }
ENGRAM_STATUS_HELPER(InvalidArgument, kInvalidArgument)
ENGRAM_STATUS_HELPER(NotFound, kNotFound)
ENGRAM_STATUS_HELPER(OutOfRange, kOutOfRange)
ENGRAM_STATUS_HELPER(DataLoss, kDataLoss)
ENGRAM_STATUS_HELPER(FailedPrecondition, kFailedPrecondition)
ENGRAM_STATUS_HELPER(ResourceExhausted, kResourceExhausted)
ENGRAM_STATUS_HELPER(Unavailable, kUnavailable)
ENGRAM_STATUS_HELPER(Unimplemented, kUnimplemented)
ENGRAM_STATUS_HELPER(Internal, kInternal)
ENGRAM_STATUS_HELPER(Cancelled, kCancelled)
#undef ENGRAM_STATUS_HELPER

// Status from errno after a failed system call: "what: strerror(errno)".
Status ErrnoStatus(StatusCode code, const std::string& what, int err);

}  // namespace engram

#define ENGRAM_CONCAT_INNER(a, b) a##b
#define ENGRAM_CONCAT(a, b) ENGRAM_CONCAT_INNER(a, b)

#define ENGRAM_RETURN_IF_ERROR(expr)         \
  do {                                       \
    ::engram::Status _engram_st = (expr);    \
    if (!_engram_st.ok()) return _engram_st; \
  } while (0)

#define ENGRAM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

// ENGRAM_ASSIGN_OR_RETURN(auto x, MakeX());
#define ENGRAM_ASSIGN_OR_RETURN(lhs, expr) \
  ENGRAM_ASSIGN_OR_RETURN_IMPL(ENGRAM_CONCAT(_engram_res_, __LINE__), lhs, expr)
