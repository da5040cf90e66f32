// Status: a result code plus a human sentence. Every internal fallible function returns one.
#pragma once

#include <string>
#include <utility>

namespace weft {

// Same numeric values as weftResult_t (include/weft/weft.h); core does not include the public header.
enum class Code : int {
  kSuccess = 0,
  kUnhandledCuda = 1,
  kSystem = 2,
  kInternal = 3,
  kInvalidArgument = 4,
  kInvalidUsage = 5,
  kRemote = 6,
  kInProgress = 7,
  kTimeout = 8,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool isOk() const { return code_ == Code::kSuccess; }
  explicit operator bool() const { return isOk(); }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefix context: "while X: <message>".
  Status withContext(const std::string& context) const {
    if (isOk()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  Code code_ = Code::kSuccess;
  std::string message_;
};

inline Status invalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status invalidUsage(std::string m) { return {Code::kInvalidUsage, std::move(m)}; }
inline Status systemError(std::string m) { return {Code::kSystem, std::move(m)}; }
inline Status internalError(std::string m) { return {Code::kInternal, std::move(m)}; }
inline Status remoteError(std::string m) { return {Code::kRemote, std::move(m)}; }
inline Status timeoutError(std::string m) { return {Code::kTimeout, std::move(m)}; }

// "<what>: <strerror(err)>"
Status errnoStatus(const std::string& what, int err);

const char* codeName(Code code);

}  // namespace weft

#define WEFT_TRY(expr)                      \
  do {                                      \
    ::weft::Status weft_try_s_ = (expr);    \
    if (!weft_try_s_.isOk()) return weft_try_s_; \
  } while (0)
