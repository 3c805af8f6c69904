#include "common.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "core/convert.hpp"
#include "core/rules.hpp"
#include "cpu/simd.hpp"

namespace proxyattn::tool {

void finish_options(CommonOptions& o) {
  o.config.keep_sink = !o.no_sink;
  o.config.budget_mode = o.budget_mode == "last_row_count" ? BudgetMode::last_row_count
                         : o.budget_mode == "row_mass"     ? BudgetMode::row_mass
                                                           : BudgetMode::row_ratio;
  try {
    validate(o.config);
    detail::cpu::force_kernels(o.cpu_kernels);
  } catch (const Error& e) {
    throw UsageError(e);
  }
}

Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") {
    if (!cuda_available()) throw UsageError("--device cuda: no CUDA device is available in this build/machine");
    return Device::cuda;
  }
  return cuda_available() ? Device::cuda : Device::cpu;
}

DType parse_dtype(const std::string& name) {
  if (name == "fp16") return DType::float16;
  if (name == "fp32") return DType::float32;
  return DType::bfloat16;
}

namespace {

TensorView view3(void* data, DType dt, std::int64_t n, int h, int d, Device dev) {
  return TensorView::contiguous(data, dt, {n, h, d}, dev);
}

void convert_to(DType dt, const float* src, std::size_t n, std::vector<unsigned char>& dst) {
  dst.resize(n * dtype_size(dt));
  if (dt == DType::float32) {
    std::memcpy(dst.data(), src, n * 4);
    return;
  }
  auto* out = reinterpret_cast<std::uint16_t*>(dst.data());
  for (std::size_t i = 0; i < n; ++i)
    out[i] = dt == DType::bfloat16 ? convert::float_to_bf16(src[i]) : convert::float_to_half(src[i]);
}

}  // namespace

DeviceTensors upload_raw(const Problem& p, const void* q, const void* k, const void* v) {
  DeviceTensors t;
  t.problem = p;
  const std::int64_t n = p.total_tokens();
  const std::size_t es = dtype_size(p.dtype);
  const std::size_t qb = n * p.q_heads * p.head_dim * es, kb = n * p.kv_heads * p.head_dim * es;
  t.q = Buffer(p.device, qb);
  t.k = Buffer(p.device, kb);
  t.v = Buffer(p.device, kb);
  t.q.copy_from_host(q, qb);
  t.k.copy_from_host(k, kb);
  t.v.copy_from_host(v, kb);
  t.out_sparse = Buffer(p.device, qb);
  t.out_dense = Buffer(p.device, qb);
  t.lse_sparse = Buffer(p.device, n * p.q_heads * 4);
  t.lse_dense = Buffer(p.device, n * p.q_heads * 4);
  t.qv = view3(t.q.data(), p.dtype, n, p.q_heads, p.head_dim, p.device);
  t.kv = view3(t.k.data(), p.dtype, n, p.kv_heads, p.head_dim, p.device);
  t.vv = view3(t.v.data(), p.dtype, n, p.kv_heads, p.head_dim, p.device);
  t.osv = view3(t.out_sparse.data(), p.dtype, n, p.q_heads, p.head_dim, p.device);
  t.odv = view3(t.out_dense.data(), p.dtype, n, p.q_heads, p.head_dim, p.device);
  t.lsv = TensorView::contiguous(t.lse_sparse.data(), DType::float32, {p.q_heads, n}, p.device);
  t.ldv = TensorView::contiguous(t.lse_dense.data(), DType::float32, {p.q_heads, n}, p.device);
  return t;
}

DeviceTensors upload(const Problem& p, const float* q, const float* k, const float* v) {
  const std::int64_t n = p.total_tokens();
  std::vector<unsigned char> qb, kb, vb;
  convert_to(p.dtype, q, n * p.q_heads * p.head_dim, qb);
  convert_to(p.dtype, k, n * p.kv_heads * p.head_dim, kb);
  convert_to(p.dtype, v, n * p.kv_heads * p.head_dim, vb);
  return upload_raw(p, qb.data(), kb.data(), vb.data());
}

int default_repeat(Device device, int requested) {
  if (requested > 0) return requested;
  return device == Device::cuda ? 5 : 1;
}

double time_ms(Device device, int repeat, const std::function<void()>& fn) {
  if (device == Device::cuda || repeat > 1) {
    fn();  // warm-up: module load, first-touch, caches
    synchronize(device);
  }
  std::vector<double> t;
  for (int i = 0; i < repeat; ++i) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    synchronize(device);
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

namespace {

// A host copy of a device tensor, viewed with the same shape.
struct HostCopy {
  std::vector<unsigned char> bytes;
  TensorView view;
  HostCopy(const Buffer& b, const TensorView& like) : bytes(b.bytes()) {
    b.copy_to_host(bytes.data(), bytes.size());
    view = like;
    view.data = bytes.data();
    view.device = Device::cpu;
  }
};

}  // namespace

Progress::Progress(const std::string& what) : start(std::chrono::steady_clock::now()) {
  std::fprintf(stderr, "  %-46s", (what + " ...").c_str());
  std::fflush(stderr);
}

void Progress::done() {
  std::fprintf(stderr, " %7.2f s\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

std::string backend_label(const Plan& plan) {
  std::string s = backend_name(plan.backend());
  if (plan.backend() == Backend::cpu) s += std::string(" (") + detail::cpu::kernels().name + " kernels)";
  return s;
}

Measurement measure(Plan& plan, DeviceTensors& t, int repeat) {
  const Device dev = t.problem.device;
  const std::string times = repeat > 1 ? " (" + std::to_string(repeat) + " runs)" : "";
  Measurement m;
  t.out_dense.fill_bytes(0xFF);  // poison: an unwritten element shows as NaN
  t.out_sparse.fill_bytes(0xFF);
  Progress p1("dense attention, the reference" + times);
  m.dense_ms = time_ms(dev, repeat, [&] { dense_attention(plan, t.qv, t.kv, t.vv, t.odv, t.ldv); });
  p1.done();
  Estimate e;
  Progress p2("ProxyAttn's estimate (stages 1-3)" + times);
  m.estimate_ms = time_ms(dev, repeat, [&] { e = estimate(plan, t.qv, t.kv); });
  p2.done();
  Progress p3("sparse attention on the kept blocks" + times);
  m.sparse_ms = time_ms(dev, repeat, [&] { sparse_attention(plan, t.qv, t.kv, t.vv, e.mask, t.osv, t.lsv); });
  p3.done();
  m.estimate = to_host(plan, e);
  HostCopy os(t.out_sparse, t.osv), od(t.out_dense, t.odv), ls(t.lse_sparse, t.lsv), ld(t.lse_dense, t.ldv);
  m.recall = attention_recall(ls.view, ld.view);
  m.error = relative_error(os.view, od.view);
  m.error_total = relative_error_total(os.view, od.view);
  double sum = 0;
  for (double r : m.recall) sum += r;
  m.recall_mean = m.recall.empty() ? 1.0 : sum / m.recall.size();
  return m;
}

void report(const Plan& plan, const Measurement& m, bool json, const std::string& title,
            const std::function<std::string(int)>& head_note) {
  const Problem& p = plan.problem();
  const HostEstimate& e = m.estimate;
  const int heads = p.q_heads;
  // Per head, over the whole batch: budget (first sequence's k_h), kept density.
  std::vector<double> density(heads, 0.0);
  for (int h = 0; h < heads; ++h) {
    std::int64_t kept = 0, causal = 0;
    for (int s = 0; s < e.num_seqs; ++s) {
      kept += e.kept_blocks[s * heads + h];
      causal += e.causal_blocks[s * heads + h];
    }
    density[h] = causal ? static_cast<double>(kept) / causal : 1.0;
  }
  const double speedup_sparse = m.sparse_ms > 0 ? m.dense_ms / m.sparse_ms : 0;
  const double speedup_total = m.dense_ms / std::max(1e-9, m.sparse_ms + m.estimate_ms);
  if (json) {
    nlohmann::json j;
    j["title"] = title;
    j["backend"] = backend_name(plan.backend());
    if (plan.backend() == Backend::cpu) j["cpu_kernels"] = detail::cpu::kernels().name;
    j["tokens"] = p.total_tokens();
    j["q_heads"] = p.q_heads;
    j["kv_heads"] = p.kv_heads;
    j["head_dim"] = p.head_dim;
    j["dtype"] = dtype_name(p.dtype);
    for (int h = 0; h < heads; ++h)
      j["heads"].push_back({{"head", h}, {"budget_blocks", e.budget_blocks[h]}, {"density", density[h]},
                            {"recall", m.recall[h]}, {"output_error", m.error[h]}});
    j["density"] = e.density();
    j["recall"] = m.recall_mean;
    j["output_error"] = m.error_total;
    j["estimate_ms"] = m.estimate_ms;
    j["sparse_ms"] = m.sparse_ms;
    j["dense_ms"] = m.dense_ms;
    j["speedup_sparse"] = speedup_sparse;
    j["speedup_with_estimate"] = speedup_total;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  const Config& c = plan.config();
  const int B = c.block_size;
  std::printf("\n%s\n", title.c_str());
  std::printf("backend %s; %lld tokens in %d sequence(s), %d query heads over %d kv heads, head dim %d, %s\n",
              backend_label(plan).c_str(), static_cast<long long>(p.total_tokens()), p.num_seqs(), p.q_heads,
              p.kv_heads, p.head_dim, dtype_name(p.dtype));
  std::printf("options: gamma %.2f, blocks of %d tokens, proxy stride %d, %d proxy head(s), floor %lld tokens, "
              "sink %s, %s, exact last block %s, head columns %d, last block gamma %.2f\n\n",
              c.gamma, B, c.stride, c.proxy_groups, static_cast<long long>(c.min_budget_tokens),
              c.keep_sink ? "kept" : "not forced",
              budget_mode_name(c.budget_mode), c.exact_last_block ? "on" : "off",
              c.head_columns, proxyattn::rules::last_block_cut(c.gamma, c.last_block_gamma));
  std::printf("%5s %8s %14s %15s %14s %13s\n", "head", "kv head", "budget k_h", "kept blocks", "kept mass",
              "output error");
  std::printf("%5s %8s %14s %15s %14s %13s\n", "", "", "(blocks)", "(% of causal)", "(recall, %)", "(rel. norm)");
  for (int h = 0; h < heads; ++h)
    std::printf("%5d %8d %14d %14.1f%% %13.2f%% %13.2e\n", h, h / (p.q_heads / p.kv_heads), e.budget_blocks[h],
                100 * density[h], 100 * m.recall[h], m.error[h]);

  // A plain reading. The floor: what a head keeps at least, as a share of a sequence's causal blocks.
  const std::int64_t len0 = p.num_seqs() > 0 ? p.cu_seqlens[1] - p.cu_seqlens[0] : 0;  // the first sequence
  const std::int64_t nb0 = (len0 + B - 1) / B;
  const std::int64_t floor_blocks = std::min<std::int64_t>(nb0, (c.min_budget_tokens + B - 1) / B);
  double floor_density = 0;
  if (nb0 > 0) {
    double kept = 0;
    for (std::int64_t r = 0; r < nb0; ++r) kept += std::min<std::int64_t>(r + 1, floor_blocks);
    floor_density = kept / (nb0 * (nb0 + 1) / 2.0);
  }
  std::vector<int> order(heads);
  for (int h = 0; h < heads; ++h) order[h] = h;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return m.recall[a] < m.recall[b]; });
  std::printf("\nWhat this run shows\n");
  std::printf("  kept     %.1f%% of the causal key blocks (sparsity %.1f%%). A head keeps at least %lld block(s)\n"
              "           (the %lld-token floor): %.1f%% of a head's blocks at %lld tokens.\n",
              100 * e.density(), 100 * (1 - e.density()), static_cast<long long>(floor_blocks),
              static_cast<long long>(c.min_budget_tokens), 100 * floor_density, static_cast<long long>(len0));
  std::printf("  cost     estimate %.1f ms, sparse attention %.1f ms, dense attention %.1f ms.\n", m.estimate_ms,
              m.sparse_ms, m.dense_ms);
  std::printf("  gain     %.2fx faster than dense with the estimate, %.2fx without it.\n", speedup_total,
              speedup_sparse);
  std::printf("  quality  the kept blocks hold %.2f%% of dense attention's softmax mass (mean over heads and\n"
              "           rows); the output differs from dense by %.2e (relative norm).\n",
              100 * m.recall_mean, m.error_total);
  std::string weakest;
  for (int i = 0; i < std::min(heads, 3); ++i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%d (%.1f%%)", i ? ", " : "", order[i], 100 * m.recall[order[i]]);
    weakest += buf;
  }
  const std::string note = head_note ? head_note(order[0]) : "";
  std::printf("  weakest  heads %s. %s\n", weakest.c_str(),
              (note.empty() ? "The shared proxy of a group ranks what most of its heads attend to; a head that"
                              " attends elsewhere keeps less, and its own columns (head_columns) and the exact"
                              " last block are what bring its blocks back."
                            : note).c_str());
}

}  // namespace proxyattn::tool
