// The ProxyAttn parameters (docs/method.md) and the choice of backend.
#pragma once

#include <cstdint>

namespace proxyattn {

// How a head's budget ratio turns into a per-row block count (stage 3).
enum class BudgetMode : std::uint8_t {
  row_ratio,       // k_hm = ceil(k_h * (m+1) / Nb): the ratio applied to each row's eligible length
  last_row_count,  // k_hm = k_h: the last row's absolute count for every row
  row_mass,        // k_hm = the gamma count of the head's stage-2 masses on blocks 0..m (k_h at the
                   // last row): rows whose causal prefix holds spread-out mass keep more blocks
};

const char* budget_mode_name(BudgetMode mode);

enum class Backend : std::uint8_t {
  automatic,      // the tensors' device decides: cuda for CUDA tensors, cpu for host tensors
  cpu_reference,  // simple loops in double precision: the oracle of the tests, slow
  cpu,            // threads and vectorised fp32 loops
  cuda,
};

const char* backend_name(Backend backend);

inline constexpr int kMaxHeadColumns = 64;

struct Config {
  int block_size = 128;                 // query and key block size B
  int stride = 4;                       // proxy scores use every stride-th token
  int proxy_groups = 0;                 // g, dividing the kv head count; 0: one per kv head up to
                                        // 4 kv heads, one per 4 kv heads beyond (rules.hpp)
  double gamma = 0.91;                  // attention mass each head's budget covers, in [0, 1]
  std::int64_t min_budget_tokens = 2048;  // floor on every head's budget
  bool keep_sink = true;                // always keep key block 0
  BudgetMode budget_mode = BudgetMode::last_row_count;
  // Stage 3 for the heads whose attention the shared proxy ranking misses. Stage 2 already
  // measures each head's own block masses on the last query block, at full resolution:
  // - exact_last_block: the last query block of each sequence ranks by them instead of the proxy;
  // - head_columns: every row first spends its budget on the head's own head_columns
  //   highest-mass blocks (at most k_h of them) where they are causal, then follows the proxy.
  bool exact_last_block = true;
  int head_columns = 32;                // in [0, kMaxHeadColumns]
  // The last query block's own cut, in [0, 1]: it keeps the head's count at max(gamma,
  // last_block_gamma) of its stage-2 mass (1: every causal block). Its rows are the prompt's end,
  // whose attention at every layer makes the first generated token, at about 1 / Nb of the work.
  double last_block_gamma = 0.99;
  double scale = 0.0;                   // softmax scale; 0 means 1/sqrt(head_dim)
  Backend backend = Backend::automatic;
};

// Every field of Config, in declaration order, as X(type, name): the one list from which the C
// ABI (c_api.cpp), the Python options (module.cpp) and the tests take the fields (config.cpp checks
// at compile time that it names every field of the struct, with its type).
#define PROXYATTN_CONFIG_FIELDS(X)                                                                          \
  X(int, block_size) X(int, stride) X(int, proxy_groups) X(double, gamma) X(std::int64_t, min_budget_tokens) \
  X(bool, keep_sink) X(BudgetMode, budget_mode) X(bool, exact_last_block) X(int, head_columns)               \
  X(double, last_block_gamma) X(double, scale) X(Backend, backend)

// Throws Error naming the field and its value when a parameter is out of range.
void validate(const Config& config);

}  // namespace proxyattn
