// The embedded default input of the `demo` command: deterministic Q, K, V with the structure of
// real LLM prefill attention, so that sparse attention has something to find (i.i.d. noise gives
// near-uniform attention, where every estimator is equally right and sparsity is worthless).
//
// Attention is causal, scale 1/sqrt(head_dim), and query head h reads kv head h / (q_heads /
// kv_heads). Every head's logit scale * q_i . k_t is a sum of planted terms; the head dimension is
// split into a rotary part (the first head_dim/4 dimension pairs), one sink dimension and a content
// part (the rest). What is planted, and why:
// - Local windows (RoPE). Pair f rotates by angle theta_f * position in both q and k, with
//   theta_f geometric from 1 down to 1e-4 as in RoPE, so q_i . k_t = sum_f a_f cos(theta_f (i-t))
//   depends on i - t only and peaks at 0. With equal weights a_f the fast pairs dephase first,
//   so the logit falls roughly like gain * (1 - ln(i-t) / ln 1e4) (RoPE's long-term decay) and
//   attention like (i-t)^-alpha, alpha = gain / ln 1e4: the per-head gain (2 to 18) sets the
//   window, from nearly flat to a few tokens. Most heads of real models look like this.
// - Attention sinks. The keys of the first 4 tokens carry a large component on the sink
//   dimension that every query meets with a per-head gain, so those tokens draw a large share in
//   many heads, as the first token does in real models (their values are small, as observed).
// - Retrieval tokens. Up to 12 positions spread through the sequence (past its first 1/16) carry
//   a shared content direction in their keys; the queries of every 4th head (h % 4 == 1, spread
//   over the kv heads) seek it strongly. So several heads, through different kv heads, agree on
//   *which* far tokens matter: the premise of ProxyAttn's head-pooled proxy, and single tokens
//   that pooling keys along the sequence dilutes.
// - Different sparsity per head. Each head has a sharpness u in (0, 1), spread evenly over the
//   heads and interleaved so that every kv group holds sharp and diffuse heads. Sharp heads have
//   a high local gain and a strong sink (most mass in the sink and diagonal blocks); diffuse heads
//   have low gains (high entropy over much of the context). At 8192 tokens with the default
//   heads, 95% of the mass needs from 2 to 59 of 64 blocks, 29% of them on average (the paper
//   reports about 69% sparsity at gamma = 0.95 on real models).
// - Noise. Every q and k entry carries small noise so that nothing is exactly degenerate (content
//   noise of about 1 logit); V is noise of unit scale.
//
// The random numbers come from splitmix64 and integer arithmetic only (a normal variate is the
// sum of four 16-bit uniforms), one stream per (token, tensor), so V and the retrieval positions
// are bit-identical on every platform and thread count; q and k also use std::cos/std::sin and
// float arithmetic, so they may differ in the last bit where libm or FMA contraction differ.
#pragma once

#include <cstdint>
#include <vector>

namespace proxyattn::tool {

struct SyntheticSpec {
  std::int64_t tokens = 8192;
  int q_heads = 32, kv_heads = 8, head_dim = 128;
  std::uint64_t seed = 1;
};

struct SyntheticQkv {
  // q: [tokens, q_heads, head_dim], k and v: [tokens, kv_heads, head_dim], row-major fp32.
  std::vector<float> q, k, v;
  std::vector<std::int64_t> retrieval_tokens;  // ascending positions of the planted retrieval keys
};

// The number of leading tokens planted as attention sinks (fewer if the sequence is shorter).
inline constexpr std::int64_t kSyntheticSinkTokens = 4;

// True for the query heads that seek the retrieval tokens.
inline bool is_retrieval_head(int h) { return h % 4 == 1; }

// Throws std::invalid_argument naming the field and value if tokens < 1, a head count < 1,
// q_heads not a multiple of kv_heads, or head_dim < 8 or odd. O(tokens * heads * head_dim).
SyntheticQkv make_structured_qkv(const SyntheticSpec& spec);

}  // namespace proxyattn::tool
