// Structured synthetic Q, K, V; see synthetic.hpp for what is planted and why.
#include "synthetic.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace proxyattn::tool {
namespace {

std::uint64_t mix64(std::uint64_t z) {  // the splitmix64 finaliser
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// splitmix64: tiny, fast and fully specified, so every platform draws the same numbers. Each
// (token, tensor) has its own stream, so tokens can be generated in any order or in parallel.
struct Rng {
  std::uint64_t state;
  Rng(std::uint64_t seed, std::uint64_t stream) : state(mix64(seed ^ mix64(stream + 1))) {}
  std::uint64_t next() { return mix64(state += 0x9E3779B97F4A7C15ull); }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  // Approximately N(0, 1): the standardised sum of four 16-bit uniforms (Irwin-Hall). Integer
  // arithmetic, unlike Box-Muller's log and cos, gives the same bits everywhere, and it is cheap.
  float normal() {
    const std::uint64_t x = next();
    const std::int64_t s = static_cast<std::int64_t>((x & 0xffff) + ((x >> 16) & 0xffff) +
                                                     ((x >> 32) & 0xffff) + (x >> 48));
    constexpr double inv_std = 2.6428997921303014e-05;  // 1 / sqrt((65536^2 - 1) / 3)
    return static_cast<float>(static_cast<double>(s - 131070) * inv_std);
  }
};

// What one query head does; all gains are in logits (after the softmax scale).
struct HeadParams {
  double local = 0;      // logit at distance 0 from the rotary pairs
  double sink = 0;       // extra logit of the sink tokens
  double retrieval = 0;  // extra logit of the retrieval tokens (retrieval heads only)
  double noise = 0;      // standard deviation of the content-noise logit
};

constexpr double kMinTheta = 1e-4;     // slowest rotary frequency (RoPE base 10000)
constexpr double kSinkKey = 4.0;       // sink tokens' key component on the sink dimension
constexpr double kRetrievalKey = 6.0;  // retrieval keys' component on the content direction; large,
                                       // so that the seeking queries are short and key noise moves
                                       // one retrieval token's logit against another's by ~1 only
constexpr double kKeyNoise = 0.5;      // per-dimension key noise in the content part
constexpr double kSmallNoise = 0.02;   // per-dimension noise in the rotary and sink dims

HeadParams head_params(int h, const SyntheticSpec& s) {
  // Sharpness u in (0, 1): heads ranked by their index inside the kv group first, so that every
  // group holds the full range from diffuse (u near 0) to sharp (u near 1).
  const int group = s.q_heads / s.kv_heads;
  const int rank = (h % group) * s.kv_heads + h / group;
  const double u = (rank + 0.5) / s.q_heads;
  // The sink's pull relative to the local peak varies independently of u (golden-ratio sequence).
  const double spread = std::fmod(0.5 + rank * 0.6180339887498949, 1.0);

  HeadParams p;
  // Local gain 2..18: attention decays like distance^-(gain / ln 1e4), from nearly flat to a
  // window of a few tokens. The power 0.75 makes sharp heads the majority, as in real layers.
  p.local = 2.0 + 16.0 * std::pow(u, 0.75);
  p.sink = p.local - 2.0 + 3.0 * spread;
  p.noise = 1.0;
  if (is_retrieval_head(h)) {
    // Retrieval heads find their tokens wherever they are: a weaker local term, so that distance
    // barely changes which retrieval token wins, and a pull above the local peak.
    p.retrieval = p.local + 2.0;
    p.local *= 0.5;
  }
  return p;
}

// One row of q or k: r * (rot[i] * cs[i] + mean[i] + noise[i] * N(0, 1)), where cs holds the cos
// and sin of the token's rotary angles (zero past the rotary dims).
struct RowModel {
  std::vector<float> rot, mean, noise;
  explicit RowModel(int d) : rot(d, 0.0f), mean(d, 0.0f), noise(d, 0.0f) {}
};

void fill_row(float* out, const RowModel& m, const std::vector<float>& cs, float r, Rng& rng) {
  for (std::size_t i = 0; i < cs.size(); ++i)
    out[i] = r * (m.rot[i] * cs[i] + m.mean[i] + m.noise[i] * rng.normal());
}

}  // namespace

SyntheticQkv make_structured_qkv(const SyntheticSpec& s) {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("make_structured_qkv: " + what);
  };
  if (s.tokens < 1) fail("tokens must be >= 1, got " + std::to_string(s.tokens));
  if (s.q_heads < 1) fail("q_heads must be >= 1, got " + std::to_string(s.q_heads));
  if (s.kv_heads < 1) fail("kv_heads must be >= 1, got " + std::to_string(s.kv_heads));
  if (s.q_heads % s.kv_heads != 0)
    fail("q_heads (" + std::to_string(s.q_heads) + ") must be a multiple of kv_heads (" +
         std::to_string(s.kv_heads) + ")");
  if (s.head_dim < 8 || s.head_dim % 2 != 0)
    fail("head_dim must be even and >= 8, got " + std::to_string(s.head_dim));

  const std::int64_t n = s.tokens;
  const int hq = s.q_heads, hkv = s.kv_heads, d = s.head_dim;
  const int pairs = d / 4;                    // rotary dims [0, 2 * pairs), at least 2 pairs
  const int sink_dim = 2 * pairs;             // one dimension for the sink
  const int content = d - sink_dim - 1;       // content dims (sink_dim, d), at least 3
  // Planted logits are q^ . k^; storing q = r q^ and k = r k^ with r = d^(1/4) cancels the scale
  // 1/sqrt(d) and keeps q and k entries of similar size.
  const float r = static_cast<float>(std::sqrt(std::sqrt(static_cast<double>(d))));

  SyntheticQkv out;
  Rng misc(s.seed, ~0ull);  // layout draws; the per-token streams are 3 t, 3 t + 1, 3 t + 2

  // Retrieval positions: one in each twelfth of the sequence past its first 1/16, jittered.
  const std::int64_t sinks = std::min(n, kSyntheticSinkTokens);
  const std::int64_t first = std::max(sinks, n / 16);
  const std::int64_t n_retrieval = std::min<std::int64_t>(12, (n - first) / 64);
  for (std::int64_t j = 0; j < n_retrieval; ++j) {
    const double where = (j + 0.2 + 0.6 * misc.uniform()) / n_retrieval;  // spacing >= 25 tokens
    out.retrieval_tokens.push_back(first + static_cast<std::int64_t>(where * (n - first)));
  }
  std::vector<char> is_retrieval(n, 0);
  for (std::int64_t t : out.retrieval_tokens) is_retrieval[t] = 1;

  // The shared content direction the retrieval heads seek: a random unit vector.
  std::vector<double> dir(content);
  double norm = 0;
  for (double& x : dir) {
    x = misc.normal();
    norm += x * x;
  }
  for (double& x : dir) x /= std::sqrt(norm);

  // Keys: per (kv head, pair) rotary amplitudes in [0.8, 1.2] so that kv heads differ; three
  // kinds of token (plain, sink, retrieval) differ in their constant part only.
  std::vector<RowModel> key_rows;  // [kv head][kind]
  for (int kh = 0; kh < hkv; ++kh) {
    RowModel m(d);
    for (int f = 0; f < pairs; ++f) m.rot[2 * f] = m.rot[2 * f + 1] = 0.8f + 0.4f * misc.uniform();
    for (int i = 0; i <= sink_dim; ++i) m.noise[i] = kSmallNoise;
    for (int c = 0; c < content; ++c) m.noise[sink_dim + 1 + c] = kKeyNoise;
    RowModel sink = m, retrieval = m;
    sink.mean[sink_dim] = kSinkKey;
    for (int c = 0; c < content; ++c) retrieval.mean[sink_dim + 1 + c] = kRetrievalKey * dir[c];
    key_rows.insert(key_rows.end(), {m, sink, retrieval});
  }

  // Queries: pair f gets local / pairs, so q^ . k^ = local at distance 0 (for unit key
  // amplitudes) and decays with distance as the fast pairs dephase (RoPE's long-term decay).
  std::vector<RowModel> query_rows;
  for (int h = 0; h < hq; ++h) {
    const HeadParams p = head_params(h, s);
    RowModel m(d);
    for (int i = 0; i < 2 * pairs; ++i) m.rot[i] = static_cast<float>(p.local / pairs);
    for (int i = 0; i <= sink_dim; ++i) m.noise[i] = kSmallNoise;
    m.mean[sink_dim] = static_cast<float>(p.sink / kSinkKey);
    // Content noise of logit std p.noise against keys whose content entries have std kKeyNoise.
    const double content_noise = p.noise / (kKeyNoise * std::sqrt(static_cast<double>(content)));
    for (int c = 0; c < content; ++c) {
      m.mean[sink_dim + 1 + c] = static_cast<float>(p.retrieval / kRetrievalKey * dir[c]);
      m.noise[sink_dim + 1 + c] = static_cast<float>(content_noise);
    }
    query_rows.push_back(m);
  }

  std::vector<double> theta(pairs);
  for (int f = 0; f < pairs; ++f) theta[f] = std::pow(kMinTheta, static_cast<double>(f) / (pairs - 1));

  out.q.resize(static_cast<std::size_t>(n) * hq * d);
  out.k.resize(static_cast<std::size_t>(n) * hkv * d);
  out.v.resize(static_cast<std::size_t>(n) * hkv * d);
  // OpenMP (when the build enables it) only speeds this up: every token has its own streams.
#pragma omp parallel for schedule(static)
  for (std::int64_t t = 0; t < n; ++t) {
    std::vector<float> cs(d, 0.0f);
    for (int f = 0; f < pairs; ++f) {
      cs[2 * f] = static_cast<float>(std::cos(theta[f] * static_cast<double>(t)));
      cs[2 * f + 1] = static_cast<float>(std::sin(theta[f] * static_cast<double>(t)));
    }
    Rng rq(s.seed, 3 * t), rk(s.seed, 3 * t + 1), rv(s.seed, 3 * t + 2);
    const int kind = t < sinks ? 1 : is_retrieval[t] ? 2 : 0;
    for (int kh = 0; kh < hkv; ++kh) {
      const std::size_t row = (static_cast<std::size_t>(t) * hkv + kh) * d;
      fill_row(&out.k[row], key_rows[3 * kh + kind], cs, r, rk);
      // Values of unit scale; the sinks' are small, as in real models (attending them is a no-op).
      const float v_scale = kind == 1 ? 0.25f : 1.0f;
      for (int i = 0; i < d; ++i) out.v[row + i] = v_scale * rv.normal();
    }
    for (int h = 0; h < hq; ++h)
      fill_row(&out.q[(static_cast<std::size_t>(t) * hq + h) * d], query_rows[h], cs, r, rq);
  }
  return out;
}

}  // namespace proxyattn::tool
