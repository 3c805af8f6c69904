// libFuzzer target: paged keys and values from a caller. The bytes describe a small batch (ragged
// query and key lengths, GQA, block and page sizes, backend) and a block table whose entries,
// shape and cache size may be anything. attention must either raise proxyattn::Error before
// reading outside the cache, or accept the table and give the contiguous call's outputs (the keys
// gathered through the same table), finite from finite inputs.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_input.hpp"
#include "proxyattn/proxyattn.hpp"

using namespace proxyattn;

namespace {

constexpr int kDim = 8;

TensorView view3(std::vector<float>& x, std::int64_t tokens, int heads) {
  return TensorView::contiguous(x.data(), DType::float32, {tokens, heads, kDim}, Device::cpu);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  Problem pr;
  pr.kv_heads = 1 + in.below(2);
  pr.q_heads = pr.kv_heads * (1 + in.below(3));
  pr.head_dim = kDim;
  pr.dtype = DType::float32;
  pr.page_size = in.byte() < 245 ? 1 + in.below(20) : in.signed_byte();
  pr.cu_seqlens = {0};
  pr.cu_seqlens_k = {0};
  const int seqs = 1 + in.below(3);
  for (int s = 0; s < seqs; ++s) {
    const int kv = in.below(90);
    const int q = in.byte() < 240 ? in.below(kv + 1) : in.below(100);  // sometimes more queries than keys
    pr.cu_seqlens_k.push_back(pr.cu_seqlens_k.back() + kv);
    pr.cu_seqlens.push_back(pr.cu_seqlens.back() + q);
  }
  Config c;
  c.block_size = 16 << in.below(2);
  c.gamma = in.byte() < 128 ? 0.8 : 1.0;
  c.min_budget_tokens = 0;
  c.backend = in.below(2) ? Backend::cpu : Backend::cpu_reference;

  // The table: each sequence's pages, distinct and in range unless the bytes say otherwise.
  const int page = std::max(pr.page_size, 1);
  int max_pages = 0, used = 0;
  for (int s = 0; s < seqs; ++s) {
    const int need = (pr.cu_seqlens_k[s + 1] - pr.cu_seqlens_k[s] + page - 1) / page;
    max_pages = std::max(max_pages, need);
    used += need;
  }
  const int width = std::max(0, max_pages + (in.byte() < 235 ? in.below(2) : -1));
  const int num_pages = std::max(0, used + (in.byte() < 235 ? in.below(3) : -1 - in.below(2)));
  std::vector<std::int32_t> table(static_cast<std::size_t>(seqs) * std::max(width, 1), -1);
  for (int s = 0, next = 0; s < seqs; ++s)
    for (int i = 0; i < width; ++i) {
      std::int32_t& e = table[static_cast<std::size_t>(s) * width + i];
      e = in.byte() < 245 ? (next < num_pages ? num_pages - 1 - next++ : -1) : in.signed_byte();
    }

  // Inputs: finite values from a fixed generator (the table, not the numbers, is under test).
  std::uint32_t state = 12345u + static_cast<std::uint32_t>(size);
  const std::int64_t nq = pr.total_tokens(), nk = pr.total_kv_tokens();
  const std::int64_t cache_tokens = static_cast<std::int64_t>(num_pages) * page;
  auto values = [&](std::int64_t n) {  // at least one element, so that every view has an address
    return fuzz::uniform_values(static_cast<std::size_t>(std::max<std::int64_t>(n, 1)), state);
  };
  std::vector<float> q = values(nq * pr.q_heads * kDim), kc = values(cache_tokens * pr.kv_heads * kDim),
                     vc = values(cache_tokens * pr.kv_heads * kDim);
  std::vector<float> out(static_cast<std::size_t>(std::max<std::int64_t>(nq * pr.q_heads * kDim, 1))),
      lse(static_cast<std::size_t>(std::max<std::int64_t>(nq * pr.q_heads, 1)));

  try {
    Plan plan(c, pr);
    auto cache = [&](std::vector<float>& x) {
      return TensorView::contiguous(x.data(), DType::float32, {num_pages, page, pr.kv_heads, kDim}, Device::cpu);
    };
    const TensorView t = TensorView::contiguous(table.data(), DType::int32, {seqs, width}, Device::cpu);
    attention(plan, view3(q, nq, pr.q_heads), KvCache{cache(kc), cache(vc), t}, view3(out, nq, pr.q_heads),
              TensorView::contiguous(lse.data(), DType::float32, {pr.q_heads, nq}, Device::cpu));
    // Accepted: every key's page is in the cache. The same keys packed give the same outputs.
    std::vector<float> k(static_cast<std::size_t>(std::max<std::int64_t>(nk * pr.kv_heads * kDim, 1))), v = k;
    const std::size_t row = static_cast<std::size_t>(pr.kv_heads) * kDim;
    for (int s = 0; s < seqs; ++s)
      for (int p = 0; p < pr.cu_seqlens_k[s + 1] - pr.cu_seqlens_k[s]; ++p) {
        const std::int64_t at = static_cast<std::int64_t>(table[static_cast<std::size_t>(s) * width + p / page]) *
                                    page + p % page;
        if (at < 0 || at >= cache_tokens) __builtin_trap();  // an accepted table read outside the cache
        std::copy_n(kc.begin() + at * row, row, k.begin() + (pr.cu_seqlens_k[s] + p) * row);
        std::copy_n(vc.begin() + at * row, row, v.begin() + (pr.cu_seqlens_k[s] + p) * row);
      }
    Problem flat = pr;
    flat.page_size = 0;
    Plan packed(c, flat);
    std::vector<float> want(out.size()), want_lse(lse.size());
    attention(packed, view3(q, nq, pr.q_heads), view3(k, nk, pr.kv_heads), view3(v, nk, pr.kv_heads),
              view3(want, nq, pr.q_heads), TensorView::contiguous(want_lse.data(), DType::float32, {pr.q_heads, nq},
                                                                Device::cpu));
    for (std::size_t i = 0; i < static_cast<std::size_t>(nq * pr.q_heads * kDim); ++i)
      if (!std::isfinite(out[i]) || std::fabs(out[i] - want[i]) > 1e-5f) __builtin_trap();
  } catch (const Error&) {
  }
  return 0;
}
