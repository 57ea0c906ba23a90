// Status and StatusOr<T>: how recoverable errors cross module boundaries.
//
// A Status is either OK or carries a code and a message that says what was wrong and what to do.
// Anything a user, a file, a network peer or the disk can cause is reported this way; programmer
// invariants use MUNINN_CHECK (check.h) instead. Both types are cheap to move and thread-compatible.
#pragma once

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "muninn/core/check.h"

namespace muninn {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,   // bad input from a caller, a file, a request
  kNotFound = 2,          // a named thing does not exist
  kAlreadyExists = 3,
  kOutOfRange = 4,        // an index, length or offset past the end
  kFailedPrecondition = 5,// the system is not in a state to do this
  kResourceExhausted = 6, // memory, capacity, queue full
  kUnimplemented = 7,     // a valid request this build cannot serve
  kDataLoss = 8,          // corrupt or truncated stored data
  kIoError = 9,           // the OS said no
  kInternal = 10,         // a bug: an invariant broke in a way we could still report
  kUnavailable = 11,      // try again later
  kCancelled = 12,
  kDeadlineExceeded = 13,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  std::string_view message() const { return rep_ ? std::string_view(rep_->message) : ""; }
  // "CODE: message", or "OK".
  std::string ToString() const;

  // Returns a copy with `context` prepended to the message ("context: message"). OK stays OK.
  Status WithContext(std::string_view context) const;

  // Ignores the status on purpose (e.g. best-effort cleanup in a destructor).
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::shared_ptr<const Rep> rep_;
};

std::ostream& operator<<(std::ostream& os, const Status& s);

// Constructors named after the codes. Messages should say what was wrong and what to do.
Status InvalidArgumentError(std::string message);
Status NotFoundError(std::string message);
Status AlreadyExistsError(std::string message);
Status OutOfRangeError(std::string message);
Status FailedPreconditionError(std::string message);
Status ResourceExhaustedError(std::string message);
Status UnimplementedError(std::string message);
Status DataLossError(std::string message);
Status IoError(std::string message);
Status InternalError(std::string message);
Status UnavailableError(std::string message);
Status CancelledError(std::string message);
Status DeadlineExceededError(std::string message);
// An IoError naming `context` and the strerror text of `err` (an errno value).
Status ErrnoError(std::string_view context, int err);

// StatusOr<T>: a T, or a non-OK Status explaining why there is none.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    MUNINN_CHECK(!status_.ok()) << "StatusOr constructed from an OK Status without a value";
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  template <typename U>
    requires(std::is_convertible_v<U&&, T> && !std::is_same_v<std::decay_t<U>, Status> &&
             !std::is_same_v<std::decay_t<U>, T> && !std::is_same_v<std::decay_t<U>, StatusOr>)
  StatusOr(U&& value) : value_(T(std::forward<U>(value))) {}  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const& { return status_; }
  Status status() && { return std::move(status_); }

  const T& value() const& {
    MUNINN_CHECK(ok()) << "value() of a failed StatusOr: " << status_;
    return *value_;
  }
  T& value() & {
    MUNINN_CHECK(ok()) << "value() of a failed StatusOr: " << status_;
    return *value_;
  }
  T&& value() && {
    MUNINN_CHECK(ok()) << "value() of a failed StatusOr: " << status_;
    return std::move(*value_);
  }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace muninn

#define MUNINN_STATUS_CONCAT_INNER_(a, b) a##b
#define MUNINN_STATUS_CONCAT_(a, b) MUNINN_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define RETURN_IF_ERROR(expr)                                   \
  do {                                                          \
    ::muninn::Status muninn_status_tmp_ = (expr);               \
    if (!muninn_status_tmp_.ok()) return muninn_status_tmp_;    \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (a StatusOr), returns its Status if not OK,
// otherwise moves the value into `lhs` (which may be a declaration: `auto x`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  MUNINN_ASSIGN_OR_RETURN_IMPL_(MUNINN_STATUS_CONCAT_(muninn_statusor_, __LINE__), lhs, expr)
#define MUNINN_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()
