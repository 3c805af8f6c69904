// Reference attention over a block mask (or every causal block), in double precision.
#include <cmath>
#include <vector>

#include "core/backends.hpp"
#include "core/tensor_access.hpp"

namespace proxyattn::detail::reference {

void attention(const Plan::Impl& p, const TensorView& q, const TensorView& k, const TensorView& v,
               const BlockMask* mask, const TensorView& out, const TensorView& lse) {
  const int heads = p.problem.q_heads, block = p.config.block_size;
  const std::int64_t dim = p.problem.head_dim, total = p.problem.total_tokens();
  float* lse_out = lse.defined() ? lse.as<float>() : nullptr;
  for (int s = 0; s < p.problem.num_seqs(); ++s) {
    // Query position i (of the keys' positions) is token begin + i - offset of q.
    const std::int64_t begin = p.seq_begin(s), len = p.kv_len(s), offset = p.q_offset(s);
    for (std::int64_t r = 0; r < p.seq_blocks(s); ++r)
      for (int h = 0; h < heads; ++h) {
        const std::int64_t m = p.first_block(s) + r;
        std::vector<std::int64_t> blocks;
        if (mask) {
          const std::int64_t row = (p.block_offset[s] + r) * heads + h;
          for (std::int64_t i = mask->row_offsets[row]; i < mask->row_offsets[row + 1]; ++i)
            blocks.push_back(mask->col_indices[i]);
        } else {
          for (std::int64_t n = 0; n <= m; ++n) blocks.push_back(n);
        }
        const int kvh = h / p.gqa_ratio();
        for (std::int64_t i = std::max(m * block, offset); i < std::min((m + 1) * block, len); ++i) {
          std::vector<std::int64_t> keys;
          for (std::int64_t n : blocks)
            for (std::int64_t t = n * block; t < std::min((n + 1) * block, i + 1); ++t) keys.push_back(t);
          std::vector<double> scores(keys.size());
          double mx = -INFINITY;
          for (std::size_t j = 0; j < keys.size(); ++j) {
            double dot = 0;
            for (std::int64_t d = 0; d < dim; ++d)
              dot += load(q, begin + i - offset, h, d) * load(k, p.kv_token(s, keys[j]), kvh, d);
            scores[j] = dot * p.scale;
            if (scores[j] > mx) mx = scores[j];
          }
          std::vector<double> acc(dim, 0.0);
          double sum = 0;
          for (std::size_t j = 0; j < keys.size(); ++j) {
            const double w = std::exp(scores[j] - mx);
            sum += w;
            for (std::int64_t d = 0; d < dim; ++d) acc[d] += w * load(v, p.kv_token(s, keys[j]), kvh, d);
          }
          const std::int64_t token = begin + i - offset;
          for (std::int64_t d = 0; d < dim; ++d) store(out, token, h, d, keys.empty() ? 0.0 : acc[d] / sum);
          if (lse_out) lse_out[h * total + token] = keys.empty() ? -INFINITY : static_cast<float>(mx + std::log(sum));
        }
      }
  }
}

}  // namespace proxyattn::detail::reference
