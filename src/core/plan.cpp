#include "proxyattn/plan.hpp"

#include <cmath>

#include "core/backends.hpp"
#include "core/check.hpp"
#include "core/plan_impl.hpp"
#include "core/rules.hpp"

namespace proxyattn {
namespace {

using detail::invalid;

// Cumulative offsets: [0] == 0, non-decreasing.
void check_offsets(const char* name, const std::vector<std::int32_t>& cu) {
  if (cu[0] != 0) invalid("problem.", name, "[0] must be 0, got ", cu[0]);
  for (std::size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1])
      invalid("problem.", name, " must be non-decreasing, got ", name, "[", i - 1, "] = ", cu[i - 1], " > ", name,
              "[", i, "] = ", cu[i]);
}

void validate_problem(const Config& c, const Problem& p) {
  if (p.q_heads < 1) invalid("problem.q_heads must be >= 1, got ", p.q_heads);
  if (p.kv_heads < 1) invalid("problem.kv_heads must be >= 1, got ", p.kv_heads);
  if (p.q_heads % p.kv_heads != 0)
    invalid("problem.q_heads (", p.q_heads, ") must be a multiple of problem.kv_heads (", p.kv_heads,
            ")");
  if (c.proxy_groups > 0 && p.kv_heads % c.proxy_groups != 0)
    invalid("config.proxy_groups (", c.proxy_groups, ") must divide problem.kv_heads (", p.kv_heads,
            ")");
  if (p.head_dim < 1 || p.head_dim > 1024)
    invalid("problem.head_dim must be in [1, 1024], got ", p.head_dim);
  if (p.dtype != DType::float32 && p.dtype != DType::float16 && p.dtype != DType::bfloat16)
    invalid("problem.dtype must be float32, float16 or bfloat16, got ", dtype_name(p.dtype));
  if (p.cu_seqlens.size() < 2)
    invalid("problem.cu_seqlens needs at least 2 entries (one sequence), got ", p.cu_seqlens.size());
  check_offsets("cu_seqlens", p.cu_seqlens);
  if (!p.cu_seqlens_k.empty()) {
    const auto& k = p.cu_seqlens_k;
    if (k.size() != p.cu_seqlens.size())
      invalid("problem.cu_seqlens_k must have as many entries as problem.cu_seqlens (", p.cu_seqlens.size(),
              "), got ", k.size());
    check_offsets("cu_seqlens_k", k);
    for (std::size_t i = 1; i < k.size(); ++i) {
      const std::int64_t q_len = p.cu_seqlens[i] - p.cu_seqlens[i - 1], kv_len = k[i] - k[i - 1];
      if (q_len > kv_len)
        invalid("sequence ", i - 1, " has ", q_len, " queries but ", kv_len,
                " keys (cu_seqlens and cu_seqlens_k): the queries are the last positions of the keys, so "
                "there cannot be more of them");
    }
  }
  if (p.page_size < 0) invalid("problem.page_size must be >= 0 (0: no paging), got ", p.page_size);
  if (p.page_size > 0 && p.cu_seqlens_k.empty())
    invalid("problem.cu_seqlens_k is required with paged keys (problem.page_size ", p.page_size,
            "): it gives each sequence's key count");
  if (p.device_index < 0) invalid("problem.device_index must be >= 0, got ", p.device_index);
}

Backend resolve_backend(const Config& c, const Problem& p) {
  Backend b = c.backend;
  if (b == Backend::automatic) b = p.device == Device::cuda ? Backend::cuda : Backend::cpu;
  if (b == Backend::cuda && p.device != Device::cuda)
    invalid("config.backend is cuda but problem.device is cpu");
  if (b != Backend::cuda && p.device == Device::cuda)
    invalid("config.backend is ", backend_name(b), ", which needs host tensors, but problem.device is cuda");
  if (b == Backend::cuda && !detail::cuda::built())
    detail::fail(ErrorCode::unsupported, "problem.device is cuda but this build has no CUDA backend");
  return b;
}

std::unique_ptr<Plan::Impl> make_impl(const Config& config, const Problem& problem) {
  validate(config);
  validate_problem(config, problem);
  auto impl = std::make_unique<Plan::Impl>();
  impl->config = config;
  if (config.proxy_groups == 0) impl->config.proxy_groups = rules::auto_proxy_groups(problem.kv_heads);
  impl->problem = problem;
  impl->backend = resolve_backend(config, problem);
  impl->scale = config.scale > 0 ? static_cast<float>(config.scale)
                                 : static_cast<float>(1.0 / std::sqrt(static_cast<double>(problem.head_dim)));
  const int n = problem.num_seqs();
  impl->block_offset.assign(n + 1, 0);
  impl->kv_block_offset.assign(n + 1, 0);
  impl->mask_capacity = 0;
  for (int s = 0; s < n; ++s) {
    // Rows run over the blocks that hold the sequence's queries (the last positions of its keys),
    // from first_block(s) to its last key block; a sequence without queries has none.
    const std::int64_t kv_blocks = rules::ceil_div(impl->kv_len(s), config.block_size);
    const std::int64_t rows = impl->seq_len(s) ? kv_blocks - impl->first_block(s) : 0;
    impl->block_offset[s + 1] = impl->block_offset[s] + rows;
    impl->kv_block_offset[s + 1] = impl->kv_block_offset[s] + kv_blocks;
    impl->mask_capacity += problem.q_heads * impl->causal_blocks(s);
  }
  impl->num_blocks = impl->block_offset[n];
  impl->mask_rows = impl->num_blocks * problem.q_heads;
  if (impl->mask_capacity > INT64_C(0x7fffffff) * 4)
    detail::fail(ErrorCode::unsupported, "the causal mask of this batch has ", impl->mask_capacity,
                 " blocks, more than this library indexes; use a larger config.block_size");
  if (impl->backend == Backend::cuda) detail::cuda::check_supported(*impl);
  return impl;
}

void allocate_results(Plan::Impl& impl) {
  if (impl.backend != Backend::cuda) {
    impl.row_offsets.assign(impl.mask_rows + 1, 0);
    impl.col_indices.assign(impl.mask_capacity, 0);
    impl.budget_blocks.assign(static_cast<std::size_t>(impl.problem.num_seqs()) * impl.problem.q_heads, 0);
    impl.kept_blocks.assign(impl.budget_blocks.size(), 0);
  }
}

}  // namespace

Problem Problem::single(std::int64_t tokens, int q_heads, int kv_heads, int head_dim, DType dtype,
                        Device device, int device_index) {
  if (tokens < 0 || tokens > INT32_MAX) invalid("Problem::single: tokens must be in [0, 2^31), got ", tokens);
  Problem p;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.head_dim = head_dim;
  p.dtype = dtype;
  p.device = device;
  p.device_index = device_index;
  p.cu_seqlens = {0, static_cast<std::int32_t>(tokens)};
  return p;
}

Plan::Plan(const Config& config, const Problem& problem, void* stream)
    : impl_(make_impl(config, problem)) {
  allocate_results(*impl_);
  if (impl_->backend == Backend::cuda) {
    impl_->workspace_bytes = detail::cuda::workspace_bytes(*impl_);
    impl_->owned_workspace = Buffer(Device::cuda, impl_->workspace_bytes, problem.device_index);
    impl_->workspace = impl_->owned_workspace.data();
    detail::cuda::prepare(*impl_, stream);
  }
}

Plan::Plan(const Config& config, const Problem& problem, void* workspace, std::size_t bytes, void* stream)
    : impl_(make_impl(config, problem)) {
  allocate_results(*impl_);
  if (impl_->backend == Backend::cuda) {
    const std::size_t need = detail::cuda::workspace_bytes(*impl_);
    if (workspace == nullptr || bytes < need)
      invalid("workspace: need ", need, " bytes, got ", bytes, " at ", workspace);
    impl_->workspace = workspace;
    impl_->workspace_bytes = bytes;
    detail::cuda::prepare(*impl_, stream);
  }
}

Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;

std::size_t Plan::workspace_bytes(const Config& config, const Problem& problem) {
  auto impl = make_impl(config, problem);
  return impl->backend == Backend::cuda ? detail::cuda::workspace_bytes(*impl) : 0;
}

const Config& Plan::config() const { return impl_->config; }
const Problem& Plan::problem() const { return impl_->problem; }
Backend Plan::backend() const { return impl_->backend; }
float Plan::scale() const { return impl_->scale; }
std::int64_t Plan::num_blocks() const { return impl_->num_blocks; }
std::int64_t Plan::mask_rows() const { return impl_->mask_rows; }
std::int64_t Plan::mask_capacity() const { return impl_->mask_capacity; }

}  // namespace proxyattn
