// Error helpers: every failure names the argument and the values.
#pragma once

#include <sstream>
#include <string>
#include <utility>

#include "proxyattn/error.hpp"

namespace proxyattn::detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

template <class... Parts>
[[noreturn]] void fail(ErrorCode code, Parts&&... parts) {
  throw Error(code, concat(std::forward<Parts>(parts)...));
}

template <class... Parts>
[[noreturn]] void invalid(Parts&&... parts) {
  fail(ErrorCode::invalid_argument, std::forward<Parts>(parts)...);
}

}  // namespace proxyattn::detail
