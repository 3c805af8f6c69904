// Errors: one exception type whose message names the argument and the values.
#pragma once

#include <stdexcept>
#include <string>

namespace proxyattn {

enum class ErrorCode {
  invalid_argument,  // a shape, dtype, stride, device or parameter is wrong
  unsupported,       // valid, but this build or backend cannot run it
  runtime,           // a device or system call failed
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error("proxyattn: " + message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace proxyattn
