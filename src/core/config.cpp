#include "proxyattn/config.hpp"

#include <cmath>
#include <type_traits>

#include "core/check.hpp"

namespace proxyattn {
namespace {

// PROXYATTN_CONFIG_FIELDS names every field of Config with its type, in order: each listed field
// has the listed type, and the struct has as many fields as the list (the largest number of
// initialisers an aggregate takes).
struct AnyValue {
  template <class T>
  operator T() const;  // NOLINT: converts to any field type, for counting only
};

template <class T, class... A>
constexpr int aggregate_fields() {
  if constexpr (requires { T{A{}..., AnyValue{}}; })
    return aggregate_fields<T, A..., AnyValue>();
  else
    return static_cast<int>(sizeof...(A));
}

#define PROXYATTN_COUNT(T, name) +1
#define PROXYATTN_CHECK_TYPE(T, name) \
  static_assert(std::is_same_v<decltype(Config::name), T>, "PROXYATTN_CONFIG_FIELDS: the type of " #name);
PROXYATTN_CONFIG_FIELDS(PROXYATTN_CHECK_TYPE)
static_assert(aggregate_fields<Config>() == 0 PROXYATTN_CONFIG_FIELDS(PROXYATTN_COUNT),
              "PROXYATTN_CONFIG_FIELDS must list every field of Config");
#undef PROXYATTN_CHECK_TYPE
#undef PROXYATTN_COUNT

}  // namespace

const char* backend_name(Backend backend) {
  switch (backend) {
    case Backend::automatic: return "automatic";
    case Backend::cpu_reference: return "cpu_reference";
    case Backend::cpu: return "cpu";
    case Backend::cuda: return "cuda";
  }
  return "?";
}

const char* budget_mode_name(BudgetMode mode) {
  switch (mode) {
    case BudgetMode::row_ratio: return "row_ratio";
    case BudgetMode::last_row_count: return "last_row_count";
    case BudgetMode::row_mass: return "row_mass";
  }
  return "?";
}

void validate(const Config& c) {
  using detail::invalid;
  if (c.block_size < 1 || c.block_size > 4096)
    invalid("config.block_size must be in [1, 4096], got ", c.block_size);
  if (c.stride < 1) invalid("config.stride must be >= 1, got ", c.stride);
  if (c.block_size % c.stride != 0)
    invalid("config.block_size (", c.block_size, ") must be a multiple of config.stride (", c.stride,
            ")");
  if (c.proxy_groups < 0)
    invalid("config.proxy_groups must be >= 0 (0: one per kv head), got ", c.proxy_groups);
  if (!(c.gamma >= 0.0 && c.gamma <= 1.0)) invalid("config.gamma must be in [0, 1], got ", c.gamma);
  if (c.min_budget_tokens < 0)
    invalid("config.min_budget_tokens must be >= 0, got ", c.min_budget_tokens);
  if (c.head_columns < 0 || c.head_columns > kMaxHeadColumns)
    invalid("config.head_columns must be in [0, ", kMaxHeadColumns, "], got ", c.head_columns);
  if (!(c.last_block_gamma >= 0.0 && c.last_block_gamma <= 1.0))
    invalid("config.last_block_gamma must be in [0, 1], got ", c.last_block_gamma);
  if (!(c.scale >= 0.0) || std::isinf(c.scale))
    invalid("config.scale must be finite and >= 0 (0 means 1/sqrt(head_dim)), got ", c.scale);
  if (static_cast<int>(c.budget_mode) > static_cast<int>(BudgetMode::row_mass))
    invalid("config.budget_mode is not a BudgetMode value: ", static_cast<int>(c.budget_mode));
  if (static_cast<int>(c.backend) > static_cast<int>(Backend::cuda))
    invalid("config.backend is not a Backend value: ", static_cast<int>(c.backend));
}

}  // namespace proxyattn
