// The C ABI (libproxyattn_c.so) on the CPU: its defaults are the C++ ones, null arguments and bad
// values are named errors, and its calls give the C++ API's bytes, for whole prompts, chunks
// against longer keys and paged keys.
#include "proxyattn/c_api.h"

#include <cstring>
#include <string>

#include "chunk_util.hpp"
#include "test_util.hpp"

using namespace testutil;

namespace {

pa_tensor c_view(const HostTensor& t) {
  pa_tensor c{};
  const TensorView v = t.view();
  c.data = v.data;
  c.dtype = static_cast<std::int32_t>(t.dtype);
  c.device = PA_CPU;
  c.ndim = v.ndim;
  for (int d = 0; d < v.ndim; ++d) c.shape[d] = v.shape[d], c.stride[d] = v.stride[d];
  return c;
}

std::string last_error() { return pa_last_error(); }

pa_config c_config(int backend) {
  pa_config c;
  pa_config_default(&c);
  c.backend = backend;
  c.min_budget_tokens = 128;  // small inputs still drop blocks
  c.gamma = 0.8;
  return c;
}

Config cpp_config(Backend backend) {
  Config c;
  c.backend = backend;
  c.min_budget_tokens = 128;
  c.gamma = 0.8;
  return c;
}

// A plan through the C ABI, destroyed at the end of the scope.
struct CPlan {
  pa_plan* plan = nullptr;
  ~CPlan() { pa_plan_destroy(plan); }
};

}  // namespace

TEST(CApi, DefaultsAreTheCppDefaults) {
  pa_config c;
  std::memset(&c, 0x5A, sizeof c);
  pa_config_default(&c);
  const Config d;
  EXPECT_EQ(c.block_size, d.block_size);
  EXPECT_EQ(c.stride, d.stride);
  EXPECT_EQ(c.proxy_groups, d.proxy_groups);
  EXPECT_EQ(c.gamma, d.gamma);
  EXPECT_EQ(c.min_budget_tokens, d.min_budget_tokens);
  EXPECT_EQ(c.keep_sink, d.keep_sink ? 1 : 0);
  EXPECT_EQ(c.budget_mode, static_cast<int>(d.budget_mode));
  EXPECT_EQ(c.scale, d.scale);
  EXPECT_EQ(c.backend, static_cast<int>(d.backend));
  EXPECT_EQ(c.exact_last_block, d.exact_last_block ? 1 : 0);
  EXPECT_EQ(c.head_columns, d.head_columns);
  EXPECT_EQ(c.last_block_gamma, d.last_block_gamma);
}

TEST(CApi, NullArgumentsAndBadValuesAreNamedErrors) {
  EXPECT_EQ(pa_estimate(nullptr, nullptr, nullptr, nullptr, nullptr), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("plan"), std::string::npos) << last_error();
  EXPECT_EQ(pa_plan_num_blocks(nullptr), -1);
  EXPECT_EQ(pa_plan_workspace_bytes(nullptr), 0u);
  pa_config cfg = c_config(PA_BACKEND_CPU);
  CPlan p;
  EXPECT_EQ(pa_plan_create(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, nullptr, 1, nullptr, &p.plan), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("cu_seqlens_host"), std::string::npos) << last_error();
  const std::int32_t cu[] = {0, 100, 300};
  cfg.gamma = 2.0;
  EXPECT_EQ(pa_plan_create(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, cu, 2, nullptr, &p.plan), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("gamma"), std::string::npos) << last_error();
  cfg.gamma = 0.8;
  cfg.budget_mode = 3;
  EXPECT_EQ(pa_plan_create(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, cu, 2, nullptr, &p.plan), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("budget_mode must be 0 (row_ratio), 1 (last_row_count) or 2 (row_mass), got 3"),
            std::string::npos)
      << last_error();
  cfg.budget_mode = PA_ROW_MASS;
  EXPECT_EQ(pa_plan_create(&cfg, 4, 3, 32, PA_FLOAT32, PA_CPU, 0, cu, 2, nullptr, &p.plan), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("kv_heads"), std::string::npos) << last_error();
  ASSERT_EQ(pa_plan_create(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, cu, 2, nullptr, &p.plan), PA_OK) << last_error();
  EXPECT_EQ(pa_plan_num_blocks(p.plan), 3);  // 1 + 2 blocks of 128
  EXPECT_EQ(pa_dense_attention(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("plan"), std::string::npos) << last_error();
  EXPECT_EQ(pa_dense_attention(p.plan, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("q is null"), std::string::npos) << last_error();
  std::mt19937_64 rng(fresh_seed());
  const Qkv x = random_qkv(make_problem({100, 200}, 4, 2, 32, DType::float32), rng);
  const pa_tensor q = c_view(x.q), k = c_view(x.k), v = c_view(x.v);
  EXPECT_EQ(pa_sparse_attention(p.plan, &q, &k, &v, nullptr, nullptr, 0, nullptr, nullptr, nullptr),
            PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("row_offsets is null"), std::string::npos) << last_error();
  HostTensor out(DType::float32, {300, 4, 32}), lse(DType::float32, {3, 300});  // lse: 3 heads, not 4
  const pa_tensor o = c_view(out), l = c_view(lse);
  EXPECT_EQ(pa_dense_attention(p.plan, &q, &k, &v, &o, &l, nullptr), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("lse"), std::string::npos) << last_error();
}

// Estimate + sparse attention and dense attention through the C ABI equal the C++ API's, bit for
// bit, on both CPU backends.
TEST(CApi, CallsGiveTheCppApisBytes) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const Problem pr = make_problem({300, 1, 700}, 4, 2, 32, DType::float32);
  const Qkv x = random_qkv(pr, rng);
  const pa_tensor q = c_view(x.q), k = c_view(x.k), v = c_view(x.v);
  for (const auto& [c_backend, backend] :
       {std::pair{PA_BACKEND_CPU, Backend::cpu}, std::pair{PA_BACKEND_CPU_REFERENCE, Backend::cpu_reference}}) {
    Plan plan(cpp_config(backend), pr);
    HostTensor want(DType::float32, {pr.total_tokens(), 4, 32}), want_dense = want;
    const HostEstimate e = to_host(plan, attention(plan, x.q.view(), x.k.view(), x.v.view(), want.view(), TensorView{}));
    dense_attention(plan, x.q.view(), x.k.view(), x.v.view(), want_dense.view(), TensorView{});
    const pa_config cfg = c_config(c_backend);
    CPlan p;
    ASSERT_EQ(pa_plan_create(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, pr.cu_seqlens.data(), pr.num_seqs(), nullptr,
                             &p.plan),
              PA_OK)
        << last_error();
    HostTensor got = want, got_dense = want;
    got.poison(), got_dense.poison();
    const pa_tensor o = c_view(got), od = c_view(got_dense);
    pa_estimate_result est{};
    ASSERT_EQ(pa_attention(p.plan, &q, &k, &v, &o, nullptr, nullptr, &est), PA_OK) << last_error();
    ASSERT_EQ(est.num_rows, plan.mask_rows());
    EXPECT_EQ(std::vector<std::int64_t>(est.row_offsets, est.row_offsets + est.num_rows + 1), e.mask.row_offsets);
    EXPECT_EQ(std::vector<std::int32_t>(est.col_indices, est.col_indices + est.row_offsets[est.num_rows]),
              e.mask.col_indices);
    EXPECT_LT(est.row_offsets[est.num_rows], plan.mask_capacity()) << "the config kept every block";
    EXPECT_EQ(got.bytes, want.bytes);
    ASSERT_EQ(pa_dense_attention(p.plan, &q, &k, &v, &od, nullptr, nullptr), PA_OK) << last_error();
    EXPECT_EQ(got_dense.bytes, want_dense.bytes);
  }
}

// pa_plan_create_kv: a chunk's queries against all its sequence's keys, packed or in shuffled
// pages, give the C++ API's chunk outputs; wrong key tables are named errors.
TEST(CApi, ChunksAndPagesGiveTheCppApisBytes) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const ChunkRun r = make_run({{37, 200}, {150, 900}, 4, 2, 32, DType::float32}, rng);
  Plan plan(cpp_config(Backend::cpu), r.part);
  HostTensor want(DType::float32, {r.part.total_tokens(), 4, 32});
  attention(plan, r.q.view(), r.x.k.view(), r.x.v.view(), want.view(), TensorView{});
  const pa_config cfg = c_config(PA_BACKEND_CPU);
  const std::int32_t* cu_q = r.part.cu_seqlens.data();
  const std::int32_t* cu_k = r.part.cu_seqlens_k.data();
  CPlan bad;
  EXPECT_EQ(pa_plan_create_kv(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, cu_q, nullptr, 2, 0, nullptr, &bad.plan),
            PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("cu_seqlens_k_host"), std::string::npos) << last_error();
  EXPECT_EQ(pa_plan_create_kv(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, cu_k, cu_q, 2, 0, nullptr, &bad.plan),
            PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("queries but"), std::string::npos) << last_error();
  const pa_tensor q = c_view(r.q), k = c_view(r.x.k), v = c_view(r.x.v);
  {
    CPlan p;
    ASSERT_EQ(pa_plan_create_kv(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, cu_q, cu_k, 2, 0, nullptr, &p.plan), PA_OK)
        << last_error();
    HostTensor got = want;
    got.poison();
    const pa_tensor o = c_view(got);
    ASSERT_EQ(pa_attention(p.plan, &q, &k, &v, &o, nullptr, nullptr, nullptr), PA_OK) << last_error();
    EXPECT_EQ(got.bytes, want.bytes);
  }
  const Paged pg = page_out(r.x.k, r.x.v, r.part, 16, rng);
  CPlan p;
  ASSERT_EQ(pa_plan_create_kv(&cfg, 4, 2, 32, PA_FLOAT32, PA_CPU, 0, cu_q, cu_k, 2, 16, nullptr, &p.plan), PA_OK)
      << last_error();
  HostTensor got = want;
  got.poison();
  const pa_tensor o = c_view(got), kc = c_view(pg.k), vc = c_view(pg.v), table = c_view(pg.table);
  EXPECT_EQ(pa_attention(p.plan, &q, &k, &v, &o, nullptr, nullptr, nullptr), PA_INVALID_ARGUMENT);
  EXPECT_NE(last_error().find("KvCache"), std::string::npos) << last_error();
  ASSERT_EQ(pa_attention_paged(p.plan, &q, &kc, &vc, &table, &o, nullptr, nullptr, nullptr), PA_OK) << last_error();
  EXPECT_EQ(got.bytes, want.bytes);
}
