// Every bad input raises proxyattn::Error whose message names the argument and the value.
#include <functional>
#include <string>

#include "core/plan_impl.hpp"
#include "test_util.hpp"

using namespace testutil;

namespace {

struct Inputs {
  Problem pr = make_problem({40, 24}, 4, 2, 16, DType::float32);
  Config c;
  std::mt19937_64 rng{fresh_seed()};
  Qkv x;
  HostTensor out, lse;
  Inputs() {
    c.block_size = 16;
    x = random_qkv(pr, rng);
    out = HostTensor(DType::float32, {64, 4, 16});
    lse = HostTensor(DType::float32, {4, 64});
  }
};

}  // namespace

TEST(Api, ConfigErrorsNameTheField) {
  const Problem pr = make_problem({8}, 4, 2, 16, DType::float32);
  auto plan_with = [&](auto edit) {
    return [=] {
      Config c;
      edit(c);
      Plan p(c, pr);
    };
  };
  const auto bad = ErrorCode::invalid_argument;
  expect_error(plan_with([](Config& c) { c.gamma = 1.5; }), bad, {"config.gamma", "1.5"});
  expect_error(plan_with([](Config& c) { c.gamma = -0.1; }), bad, {"config.gamma"});
  expect_error(plan_with([](Config& c) { c.gamma = NAN; }), bad, {"config.gamma"});
  expect_error(plan_with([](Config& c) { c.stride = 0; }), bad, {"config.stride", "0"});
  expect_error(plan_with([](Config& c) { c.stride = 3; }), bad, {"config.block_size", "config.stride", "3"});
  expect_error(plan_with([](Config& c) { c.block_size = 0; }), bad, {"config.block_size"});
  expect_error(plan_with([](Config& c) { c.proxy_groups = 3; }), bad, {"config.proxy_groups", "3", "kv_heads"});
  expect_error(plan_with([](Config& c) { c.proxy_groups = -1; }), bad, {"config.proxy_groups", "-1"});
  expect_error(plan_with([](Config& c) { c.head_columns = kMaxHeadColumns + 1; }), bad, {"config.head_columns", "65"});
  expect_error(plan_with([](Config& c) { c.min_budget_tokens = -1; }), bad, {"config.min_budget_tokens"});
  expect_error(plan_with([](Config& c) { c.scale = -1; }), bad, {"config.scale"});
  expect_error(plan_with([](Config& c) { c.backend = Backend::cuda; }), bad, {"config.backend", "cuda"});
}

TEST(Api, ProblemErrorsNameTheField) {
  Config c;
  auto plan_of = [&](Problem p) { return [=] { Plan plan(c, p); }; };
  const auto bad = ErrorCode::invalid_argument;
  expect_error(plan_of(make_problem({8}, 6, 4, 16, DType::float32)), bad, {"q_heads", "6", "kv_heads", "4"});
  expect_error(plan_of(make_problem({8}, 0, 1, 16, DType::float32)), bad, {"q_heads"});
  expect_error(plan_of(make_problem({8}, 4, 2, 0, DType::float32)), bad, {"head_dim"});
  expect_error(plan_of(make_problem({8}, 4, 2, 16, DType::int32)), bad, {"dtype", "int32"});
  Problem p = make_problem({8, 4}, 4, 2, 16, DType::float32);
  p.cu_seqlens = {0, 8, 4};
  expect_error(plan_of(p), bad, {"cu_seqlens", "8", "4"});
  p.cu_seqlens = {1, 8};
  expect_error(plan_of(p), bad, {"cu_seqlens[0]"});
  p.cu_seqlens = {0};
  expect_error(plan_of(p), bad, {"cu_seqlens"});
}

TEST(Api, TensorErrorsNameTheArgument) {
  Inputs s;
  Plan plan(s.c, s.pr);
  const auto bad = ErrorCode::invalid_argument;
  auto run = [&](TensorView q, TensorView k, TensorView v, TensorView o, TensorView l) {
    return [=, &plan] { attention(plan, q, k, v, o, l); };
  };
  const TensorView q = s.x.q.view(), k = s.x.k.view(), v = s.x.v.view(), o = s.out.view(), l = s.lse.view();
  TensorView t = q;
  t.dtype = DType::bfloat16;
  expect_error(run(t, k, v, o, l), bad, {"q", "float32", "bfloat16"});
  t = k;
  t.shape[1] = 3;
  expect_error(run(q, t, v, o, l), bad, {"k", "[64, 2, 16]", "[64, 3, 16]"});
  t = v;
  t.shape[0] = 63;
  expect_error(run(q, k, t, o, l), bad, {"v", "63"});
  t = o;
  t.stride[2] = 2;
  expect_error(run(q, k, v, t, l), bad, {"out", "contiguous", "stride 2"});
  t = q;
  t.device = Device::cuda;
  expect_error(run(t, k, v, o, l), bad, {"q", "cuda", "cpu"});
  t = q;
  t.ndim = 2;
  expect_error(run(t, k, v, o, l), bad, {"q", "3 dimensions"});
  t = l;
  t.shape[0] = 2;
  expect_error(run(q, k, v, o, t), bad, {"lse", "[4, 64]"});
  t = l;
  t.dtype = DType::float16;
  expect_error(run(q, k, v, o, t), bad, {"lse", "float32"});
  t = q;
  t.data = nullptr;
  expect_error(run(t, k, v, o, l), bad, {"q", "null"});
  expect_error(run(TensorView{}, k, v, o, l), bad, {"q", "undefined"});
}

TEST(Api, MaskErrorsNameTheRowAndValue) {
  Inputs s;
  Plan plan(s.c, s.pr);
  const auto bad = ErrorCode::invalid_argument;
  auto full = [&] {
    HostBlockMask m;
    m.block_size = 16;
    m.num_heads = 4;
    for (int seq = 0; seq < 2; ++seq)
      for (std::int64_t b = 0; b < plan.impl().seq_blocks(seq); ++b)
        for (int h = 0; h < 4; ++h) {
          std::vector<std::int32_t> row;
          for (std::int64_t n = 0; n <= b; ++n) row.push_back(static_cast<std::int32_t>(n));
          m.add_row(row);
        }
    return m;
  };
  auto run = [&](const HostBlockMask& m) {
    return [&] { sparse_attention(plan, s.x.q.view(), s.x.k.view(), s.x.v.view(), m.view(), s.out.view(), s.lse.view()); };
  };
  HostBlockMask m = full();
  m.block_size = 32;
  expect_error(run(m), bad, {"mask.block_size", "32", "16"});
  m = full();
  m.num_heads = 2;
  expect_error(run(m), bad, {"mask.num_heads", "2"});
  m = full();
  m.row_offsets.pop_back();
  expect_error(run(m), bad, {"mask.num_rows"});
  m = full();
  m.col_indices.resize(m.col_indices.size() - 3);  // row_offsets counts 3 entries more than there are
  expect_error(run(m), bad, {"mask.row_offsets[", "col_indices holds"});
  m = full();
  m.row_offsets[3] = m.row_offsets.back() + 100;  // a middle row past the end: caught before it is read
  expect_error(run(m), bad, {"non-decreasing", "row 3"});
  m = full();
  m.col_indices[m.row_offsets[4 * 1 + 2]] = 2;  // row of block 1, head 2 keeps key block 2 > 1
  expect_error(run(m), bad, {"key block 2", "query block 1", "head 2"});
  m = full();
  std::swap(m.col_indices[m.row_offsets[5]], m.col_indices[m.row_offsets[5] + 1]);
  expect_error(run(m), bad, {"ascending"});
  expect_error([] { HostBlockMask h; h.add_row({3, 1}); }, bad, {"ascending", "3", "1"});
}

TEST(Api, WorksAfterEveryError) {
  // A failed call leaves the plan usable: errors are raised before any work starts.
  Inputs s;
  Plan plan(s.c, s.pr);
  TensorView bad = s.x.q.view();
  bad.shape[2] = 8;
  EXPECT_THROW(attention(plan, bad, s.x.k.view(), s.x.v.view(), s.out.view(), s.lse.view()), Error);
  s.out.poison();
  attention(plan, s.x.q.view(), s.x.k.view(), s.x.v.view(), s.out.view(), s.lse.view());
  EXPECT_TRUE(s.out.all_finite());
}

TEST(Api, ZeroTokensGiveEmptyResults) {
  // An empty batch is a valid call: every entry point returns empty results and an empty mask.
  for (Backend b : {Backend::cpu_reference, Backend::cpu}) {
    Config c;
    c.block_size = 16;
    c.backend = b;
    Problem pr = make_problem({0}, 4, 2, 16, DType::float32);
    HostTensor q(DType::float32, {0, 4, 16}), k(DType::float32, {0, 2, 16}), v(DType::float32, {0, 2, 16});
    HostTensor out(DType::float32, {0, 4, 16}), lse(DType::float32, {4, 0});
    Plan plan(c, pr);
    const HostEstimate h = to_host(plan, attention(plan, q.view(), k.view(), v.view(), out.view(), lse.view()));
    EXPECT_EQ(h.mask.row_offsets, std::vector<std::int64_t>{0}) << backend_name(b);
    EXPECT_TRUE(h.mask.col_indices.empty());
    EXPECT_EQ(h.density(), 1.0);
    dense_attention(plan, q.view(), k.view(), v.view(), out.view(), lse.view());
  }
}

TEST(Api, CudaWithoutCudaIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present; this checks the error without one";
  Problem p = make_problem({8}, 4, 2, 16, DType::bfloat16);
  p.device = Device::cuda;
  try {
    Plan plan(Config{}, p);
    FAIL() << "planning on cuda without a device must fail";
  } catch (const Error& e) {
    EXPECT_EQ(static_cast<int>(e.code()), static_cast<int>(ErrorCode::unsupported));
    EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos) << e.what();
  }
}
