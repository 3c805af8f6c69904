// libFuzzer target: the validation of a caller's block mask. The bytes describe a small problem
// (ragged lengths, GQA, block size, backend) and a mask in CSR form whose offsets, entries and
// length may be anything. sparse_attention must either raise proxyattn::Error before reading
// past any array, or accept the mask and give finite outputs from finite inputs.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_input.hpp"
#include "proxyattn/proxyattn.hpp"

using namespace proxyattn;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Input in(data, size);
  Problem pr;
  pr.kv_heads = 1 + in.below(2);
  pr.q_heads = pr.kv_heads * (1 + in.below(3));
  pr.head_dim = 8;
  pr.dtype = DType::float32;
  pr.cu_seqlens = {0};
  const int seqs = 1 + in.below(3);
  for (int s = 0; s < seqs; ++s) pr.cu_seqlens.push_back(pr.cu_seqlens.back() + in.below(72));
  Config c;
  c.block_size = 16 << in.below(3);
  c.backend = in.below(2) ? Backend::cpu : Backend::cpu_reference;

  // Inputs: finite values from a fixed generator (the mask, not the numbers, is under test).
  const std::int64_t total = pr.total_tokens();
  std::uint32_t state = 12345u + static_cast<std::uint32_t>(size);
  std::vector<float> q = fuzz::uniform_values(static_cast<std::size_t>(total * pr.q_heads * 8), state);
  std::vector<float> k = fuzz::uniform_values(static_cast<std::size_t>(total * pr.kv_heads * 8), state);
  std::vector<float> v = fuzz::uniform_values(static_cast<std::size_t>(total * pr.kv_heads * 8), state);
  std::vector<float> out(static_cast<std::size_t>(total * pr.q_heads * 8)), lse(static_cast<std::size_t>(total * pr.q_heads));

  try {
    Plan plan(c, pr);
    // Offsets: a start (usually 0) and per-row steps, usually small and non-negative.
    const std::int64_t rows = plan.mask_rows();
    std::vector<std::int64_t> offsets(static_cast<std::size_t>(rows + 1));
    offsets[0] = in.byte() < 240 ? 0 : in.signed_byte();
    for (std::int64_t r = 0; r < rows; ++r) {
      const int step = in.byte() < 230 ? in.below(5) : in.signed_byte();
      offsets[r + 1] = offsets[r] + step;
    }
    // Entries: as many as the last offset counts, give or take a few, each usually in range.
    const std::int64_t want = offsets.back() + (in.byte() < 220 ? 0 : in.signed_byte() % 4);
    std::vector<std::int32_t> cols(static_cast<std::size_t>(std::max<std::int64_t>(0, std::min<std::int64_t>(want, 4096))));
    for (std::int32_t& col : cols) col = in.byte() < 240 ? in.below(12) : in.signed_byte();
    BlockMask m;
    m.block_size = in.byte() < 250 ? c.block_size : 8;
    m.num_heads = pr.q_heads;
    m.num_rows = rows;
    m.row_offsets = offsets.data();
    m.col_indices = cols.data();
    m.num_entries = static_cast<std::int64_t>(cols.size());
    auto view = [&](std::vector<float>& x, int heads) {
      return TensorView::contiguous(x.data(), DType::float32, {total, heads, 8}, Device::cpu);
    };
    sparse_attention(plan, view(q, pr.q_heads), view(k, pr.kv_heads), view(v, pr.kv_heads), m, view(out, pr.q_heads),
                     TensorView::contiguous(lse.data(), DType::float32, {pr.q_heads, total}, Device::cpu));
    for (float x : out)
      if (!std::isfinite(x)) __builtin_trap();  // an accepted mask gave a non-finite output
  } catch (const Error&) {
  }
  return 0;
}
