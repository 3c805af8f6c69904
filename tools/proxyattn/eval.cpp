// eval: the demo's metrics on Q, K, V read from a safetensors file, e.g. activations captured
// from a real model. Tensors (documented in the README):
//   q [tokens, q_heads, head_dim], k and v [tokens, kv_heads, head_dim]: F32, F16 or BF16, one dtype
//   cu_seqlens (optional) [num_seqs + 1], I32 or I64: packed sequences, as flash_attn_varlen_func
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "commands.hpp"
#include "core/convert.hpp"
#include "safetensors.hpp"

namespace proxyattn::tool {

namespace {

const StTensor& need(const std::vector<StTensor>& all, const std::string& name, const std::string& path) {
  const StTensor* t = find(all, name);
  if (!t) throw UsageError(path + ": no tensor named '" + name + "' (need q, k, v; see proxyattn eval --help)");
  return *t;
}

std::string shape_str(const StTensor& t) {
  std::string s = "[";
  for (std::size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}

// The tensor's values as fp32.
std::vector<float> to_float(const StTensor& t) {
  const std::size_t n = t.bytes.size() / dtype_size(t.dtype);
  std::vector<float> out(n);
  const auto* u16 = reinterpret_cast<const std::uint16_t*>(t.bytes.data());
  for (std::size_t i = 0; i < n; ++i) {
    if (t.dtype == DType::float32)
      std::memcpy(&out[i], t.bytes.data() + 4 * i, 4);
    else
      out[i] = t.dtype == DType::bfloat16 ? convert::bf16_to_float(u16[i]) : convert::half_to_float(u16[i]);
  }
  return out;
}

}  // namespace

int run_eval(EvalOptions& o) {
  finish_options(o.common);
  const std::vector<StTensor> all = read_safetensors(o.path);
  const StTensor &q = need(all, "q", o.path), &k = need(all, "k", o.path), &v = need(all, "v", o.path);
  for (const StTensor* t : {&q, &k, &v}) {
    if (t->shape.size() != 3)
      throw UsageError(o.path + ": tensor '" + t->name + "' must be [tokens, heads, head_dim], got " + shape_str(*t));
    if (t->dtype != DType::float32 && t->dtype != DType::float16 && t->dtype != DType::bfloat16)
      throw UsageError(o.path + ": tensor '" + t->name + "' must be F32, F16 or BF16");
    if (t->dtype != q.dtype) throw UsageError(o.path + ": q, k and v must share one dtype");
  }
  if (k.shape != v.shape || k.shape[0] != q.shape[0] || k.shape[2] != q.shape[2])
    throw UsageError(o.path + ": shapes do not fit: q " + shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v));
  if (q.shape[0] < 1 || q.shape[0] > INT32_MAX) throw UsageError(o.path + ": need 1 to 2^31-1 tokens");
  if (k.shape[1] < 1 || q.shape[1] % k.shape[1] != 0)
    throw UsageError(o.path + ": q heads (" + std::to_string(q.shape[1]) + ") must be a multiple of kv heads (" +
                     std::to_string(k.shape[1]) + ")");

  const Device dev = resolve_device(o.common.device);
  DType dt = o.dtype == "file" ? q.dtype : parse_dtype(o.dtype);
  if (dev == Device::cuda && dt == DType::float32) {
    if (o.dtype == "fp32") throw UsageError("--dtype fp32 runs on the CPU only");
    dt = DType::bfloat16;
    std::fprintf(stderr, "proxyattn: the file holds F32; computing in bf16 on cuda\n");
  }
  Problem p = Problem::single(q.shape[0], static_cast<int>(q.shape[1]), static_cast<int>(k.shape[1]),
                              static_cast<int>(q.shape[2]), dt, dev);
  if (const StTensor* cu = find(all, "cu_seqlens")) {
    if (cu->shape.size() != 1 || (cu->dtype != DType::int32 && cu->dtype != DType::int64))
      throw UsageError(o.path + ": cu_seqlens must be a 1-D I32 or I64 tensor, got " + shape_str(*cu));
    p.cu_seqlens.clear();
    for (std::int64_t i = 0; i < cu->shape[0]; ++i) {
      std::int64_t x = 0;
      if (cu->dtype == DType::int32) {
        std::int32_t y;
        std::memcpy(&y, cu->bytes.data() + 4 * i, 4);
        x = y;
      } else {
        std::memcpy(&x, cu->bytes.data() + 8 * i, 8);
      }
      if (x < 0 || x > q.shape[0]) throw UsageError(o.path + ": cu_seqlens[" + std::to_string(i) + "] = " + std::to_string(x) + " is outside [0, tokens]");
      p.cu_seqlens.push_back(static_cast<std::int32_t>(x));
    }
    if (p.cu_seqlens.size() < 2 || p.cu_seqlens.back() != q.shape[0])
      throw UsageError(o.path + ": cu_seqlens must start at 0 and end at the token count " + std::to_string(q.shape[0]));
  }
  Plan plan = [&] {
    try {
      return Plan(o.common.config, p);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::invalid_argument) throw UsageError(e);
      throw;
    }
  }();
  const std::vector<float> qf = to_float(q), kf = to_float(k), vf = to_float(v);
  for (const auto& [name, x] : {std::pair{"q", &qf}, std::pair{"k", &kf}, std::pair{"v", &vf}}) {
    const auto bad = std::count_if(x->begin(), x->end(), [](float f) { return !std::isfinite(f); });
    if (bad > 0)
      std::fprintf(stderr, "proxyattn: warning: %s: tensor '%s' holds %lld NaN or Inf values; the rows that see "
                   "them will not be finite\n", o.path.c_str(), name, static_cast<long long>(bad));
  }
  DeviceTensors t = upload(p, qf.data(), kf.data(), vf.data());
  const Measurement m = measure(plan, t, default_repeat(dev, o.common.repeat));
  report(plan, m, o.common.json, "proxyattn eval: " + o.path);
  const bool finite = std::isfinite(m.error_total) && std::isfinite(m.recall_mean);
  if (!finite) std::fprintf(stderr, "proxyattn: an output is not finite (NaN or Inf): exit status 1\n");
  return finite ? 0 : 1;
}

}  // namespace proxyattn::tool
