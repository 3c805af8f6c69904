// The Python bindings (module proxyattn._core): a thin layer over the C++ API. Arrays arrive
// through DLPack (torch, numpy, cupy, jax) without a copy; the Python package (python/proxyattn)
// allocates outputs and workspaces with the caller's framework and passes the current stream,
// so this file never allocates device memory itself (host outputs for jax: HostArray).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "proxyattn/proxyattn.hpp"

namespace nb = nanobind;
using namespace proxyattn;

namespace {

using Array = nb::ndarray<nb::ro>;  // inputs: read access is enough (read-only arrays pass)
using OutArray = nb::ndarray<>;

DType dtype_of(const nb::dlpack::dtype& t, const char* name) {
  using nb::dlpack::dtype_code;
  const auto code = static_cast<dtype_code>(t.code);
  if (t.lanes == 1) {
    if (code == dtype_code::Float && t.bits == 32) return DType::float32;
    if (code == dtype_code::Float && t.bits == 16) return DType::float16;
    if (code == dtype_code::Bfloat && t.bits == 16) return DType::bfloat16;
    if (code == dtype_code::Int && t.bits == 32) return DType::int32;
    if (code == dtype_code::Int && t.bits == 64) return DType::int64;
  }
  throw Error(ErrorCode::invalid_argument,
              std::string(name) + ": unsupported dtype (DLPack code " + std::to_string(t.code) +
                  ", " + std::to_string(t.bits) + " bits); use float32, float16 or bfloat16");
}

template <class A>
TensorView view_of(const A& a, const char* name) {
  if (a.ndim() > TensorView::max_dims)
    throw Error(ErrorCode::invalid_argument, std::string(name) + ": at most 4 dimensions, got " +
                                                 std::to_string(a.ndim()));
  TensorView t;
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.dtype = dtype_of(a.dtype(), name);
  if (a.device_type() == nb::device::cpu::value) {
    t.device = Device::cpu;
  } else if (a.device_type() == nb::device::cuda::value) {
    t.device = Device::cuda;
  } else {
    throw Error(ErrorCode::invalid_argument, std::string(name) + ": arrays must be on the CPU or a "
                                                 "CUDA device, got DLPack device type " +
                                                 std::to_string(a.device_type()));
  }
  t.device_index = a.device_id();
  t.ndim = static_cast<int>(a.ndim());
  for (int i = 0; i < t.ndim; ++i) {
    t.shape[i] = static_cast<std::int64_t>(a.shape(i));
    t.stride[i] = static_cast<std::int64_t>(a.stride(i));
  }
  return t;
}

TensorView optional_view(const std::optional<OutArray>& a, const char* name) {
  return a ? view_of(*a, name) : TensorView{};
}

BudgetMode budget_mode_of(const std::string& s) {
  if (s == "row_ratio") return BudgetMode::row_ratio;
  if (s == "last_row_count") return BudgetMode::last_row_count;
  if (s == "row_mass") return BudgetMode::row_mass;
  throw Error(ErrorCode::invalid_argument,
              "budget_mode must be 'row_ratio', 'last_row_count' or 'row_mass', got '" + s + "'");
}

Backend backend_of(const std::string& s) {
  if (s == "auto" || s == "automatic") return Backend::automatic;
  if (s == "cpu_reference") return Backend::cpu_reference;
  if (s == "cpu") return Backend::cpu;
  if (s == "cuda") return Backend::cuda;
  throw Error(ErrorCode::invalid_argument,
              "backend must be 'auto', 'cpu_reference', 'cpu' or 'cuda', got '" + s + "'");
}

DType dtype_named(const std::string& s) {
  if (s == "float32") return DType::float32;
  if (s == "float16") return DType::float16;
  if (s == "bfloat16") return DType::bfloat16;
  throw Error(ErrorCode::invalid_argument,
              "dtype must be float32, float16 or bfloat16, got '" + s + "'");
}

// An uninitialised host array that this module owns (64-byte aligned), exported through DLPack
// as often as asked (__dlpack__): a writable output for callers whose own arrays cannot be written
// in place (jax), handed to their framework once the call has filled it.
struct HostArray {
  std::unique_ptr<void, decltype(&std::free)> data{nullptr, &std::free};
  std::vector<std::size_t> shape;
  nb::dlpack::dtype dtype{};
};

HostArray host_empty(const std::vector<std::size_t>& shape, const std::string& dtype) {
  using nb::dlpack::dtype_code;
  const DType t = dtype_named(dtype);
  HostArray a;
  a.shape = shape;
  a.dtype = {static_cast<std::uint8_t>(t == DType::bfloat16 ? dtype_code::Bfloat : dtype_code::Float),
             static_cast<std::uint8_t>(dtype_size(t) * 8), 1};
  std::size_t bytes = dtype_size(t);
  for (const std::size_t n : shape) bytes *= n;
  a.data.reset(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64));  // never size 0
  if (!a.data) throw Error(ErrorCode::runtime, "no host memory for an output of " + std::to_string(bytes) + " bytes");
  return a;
}

// A plan plus the last estimate it produced (which lives in the plan's workspace).
struct PyPlan {
  // The caller's workspace array, held as long as the plan (declared first: released last), so that
  // arrays viewing the workspace, which hold the plan, keep its memory too.
  std::optional<OutArray> workspace;
  Plan plan;
  Estimate last{};
  bool has_estimate = false;
};

// The Config fields by name (PROXYATTN_CONFIG_FIELDS; the softmax scale aside: the calls pass
// it): the one place where Python learns their names, their defaults (config_defaults) and their
// conversions.
nb::object to_py(int v) { return nb::int_(v); }
nb::object to_py(std::int64_t v) { return nb::int_(v); }
nb::object to_py(double v) { return nb::float_(v); }
nb::object to_py(bool v) { return nb::bool_(v); }
nb::object to_py(BudgetMode m) { return nb::str(budget_mode_name(m)); }
nb::object to_py(Backend b) { return nb::str(b == Backend::automatic ? "auto" : backend_name(b)); }

nb::dict config_to_dict(const Config& c) {
  nb::dict d;
#define PROXYATTN_TO_PY(T, name) \
  if (std::string_view(#name) != "scale") d[#name] = to_py(c.name);
  PROXYATTN_CONFIG_FIELDS(PROXYATTN_TO_PY)
#undef PROXYATTN_TO_PY
  return d;
}

template <class T>
T field(const nb::handle& value, const char* name) {
  try {
    if constexpr (std::is_same_v<T, BudgetMode>)
      return budget_mode_of(nb::cast<std::string>(value));
    else if constexpr (std::is_same_v<T, Backend>)
      return backend_of(nb::cast<std::string>(value));
    else
      return nb::cast<T>(value);
  } catch (const nb::cast_error&) {
    throw Error(ErrorCode::invalid_argument, std::string("option ") + name + ": cannot take " +
                                                 nb::cast<std::string>(nb::repr(value)));
  }
}

Config config_from_dict(const nb::dict& d, double scale) {
  Config c;
  for (auto [key, value] : d) {
    const std::string k = nb::cast<std::string>(key);
    bool known = false;
#define PROXYATTN_FROM_PY(T, name)                     \
  if (k == #name && k != "scale") {                    \
    c.name = field<T>(value, #name);                   \
    known = true;                                      \
  }
    PROXYATTN_CONFIG_FIELDS(PROXYATTN_FROM_PY)
#undef PROXYATTN_FROM_PY
    if (!known) throw Error(ErrorCode::invalid_argument, "unknown option '" + k + "'");
  }
  c.scale = scale;
  return c;
}

Problem make_problem(int q_heads, int kv_heads, int head_dim, const std::string& dtype,
                     const std::string& device, int device_index,
                     const std::vector<std::int32_t>& cu_seqlens, const std::vector<std::int32_t>& cu_seqlens_k) {
  Problem p;
  p.q_heads = q_heads;
  p.kv_heads = kv_heads;
  p.head_dim = head_dim;
  p.dtype = dtype_named(dtype);
  if (device == "cpu") {
    p.device = Device::cpu;
  } else if (device == "cuda") {
    p.device = Device::cuda;
  } else {
    throw Error(ErrorCode::invalid_argument, "device must be 'cpu' or 'cuda', got '" + device + "'");
  }
  p.device_index = device_index;
  p.cu_seqlens = cu_seqlens;
  p.cu_seqlens_k = cu_seqlens_k;
  return p;
}

void* stream_of(std::uintptr_t s) { return reinterpret_cast<void*>(s); }

// One array of the estimate as a zero-copy array of the caller's framework, keeping the plan alive.
template <class Framework>
nb::object view_as(const void* ptr, std::size_t n, nb::dlpack::dtype t, nb::handle owner, int dev, int id) {
  const std::size_t shape[1] = {n};
  return nb::cast(nb::ndarray<Framework>(const_cast<void*>(ptr), 1, shape, owner, nullptr, t, dev, id));
}

// The estimate's arrays (row_offsets, col_indices, budget_blocks, kept_blocks) as views of the
// plan's memory: valid until the plan's next estimate.
nb::tuple estimate_views(PyPlan& self, nb::handle owner, const std::string& framework) {
  const Estimate& e = self.last;
  const Plan& plan = self.plan;
  const int dev = e.device == Device::cuda ? nb::device::cuda::value : nb::device::cpu::value;
  const int id = plan.problem().device_index;
  const std::size_t rows = static_cast<std::size_t>(e.mask.num_rows);
  const std::size_t heads = static_cast<std::size_t>(plan.problem().num_seqs()) * plan.problem().q_heads;
  const std::size_t cap = static_cast<std::size_t>(plan.mask_capacity());
  auto make = [&](const void* ptr, std::size_t n, nb::dlpack::dtype t) {
    if (framework == "torch") return view_as<nb::pytorch>(ptr, n, t, owner, dev, id);
    if (framework == "cupy") return view_as<nb::cupy>(ptr, n, t, owner, dev, id);
    if (framework == "numpy") return view_as<nb::numpy>(ptr, n, t, owner, dev, id);
    throw Error(ErrorCode::invalid_argument, "framework must be torch, cupy or numpy, got " + framework);
  };
  return nb::make_tuple(make(e.mask.row_offsets, rows + 1, nb::dtype<std::int64_t>()),
                        make(e.mask.col_indices, cap, nb::dtype<std::int32_t>()),
                        make(e.budget_blocks, heads, nb::dtype<std::int32_t>()),
                        make(e.kept_blocks, heads, nb::dtype<std::int64_t>()));
}

BlockMask mask_of(const PyPlan& self, const Array& row_offsets, const Array& col_indices) {
  const TensorView ro = view_of(row_offsets, "row_offsets");
  const TensorView ci = view_of(col_indices, "col_indices");
  const Plan& plan = self.plan;
  if (ro.dtype != DType::int64 || ro.ndim != 1 || ro.stride[0] != 1)
    throw Error(ErrorCode::invalid_argument,
                "row_offsets must be a contiguous 1-D int64 array, got " + ro.describe());
  if (ci.dtype != DType::int32 || ci.ndim != 1 || (ci.shape[0] > 1 && ci.stride[0] != 1))
    throw Error(ErrorCode::invalid_argument,
                "col_indices must be a contiguous 1-D int32 array, got " + ci.describe());
  if (ro.shape[0] != plan.mask_rows() + 1)
    throw Error(ErrorCode::invalid_argument,
                "row_offsets must have mask_rows + 1 = " + std::to_string(plan.mask_rows() + 1) +
                    " entries (query blocks x q_heads + 1), got " + std::to_string(ro.shape[0]));
  if (ro.device != plan.problem().device || ci.device != plan.problem().device)
    throw Error(ErrorCode::invalid_argument, std::string("the mask must be on ") +
                                                 device_name(plan.problem().device) + ", got " +
                                                 ro.describe() + " and " + ci.describe());
  BlockMask m;
  m.block_size = plan.config().block_size;
  m.num_heads = plan.problem().q_heads;
  m.num_rows = plan.mask_rows();
  m.device = ro.device;
  m.device_index = ro.device_index;
  m.row_offsets = ro.as<const std::int64_t>();
  m.col_indices = ci.as<const std::int32_t>();
  // num_entries stays unset: the package has already checked row_offsets whole against
  // col_indices from its own read-back (_api._check_mask_arrays); a second would cost another sync.
  return m;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "proxyattn C++ core (use the proxyattn package, not this module directly)";
  // torch.compile and torch.library keep references to the bound functions and plans in caches
  // that Python never frees at exit; nanobind would report each as a leak, which a user's program
  // must not print. The package also drops its plan cache at exit (_api.py).
  nb::set_leak_warnings(false);

  // Errors keep the library's message, which names the argument and the values.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      switch (e.code()) {
        case ErrorCode::invalid_argument: PyErr_SetString(PyExc_ValueError, e.what()); break;
        case ErrorCode::unsupported: PyErr_SetString(PyExc_NotImplementedError, e.what()); break;
        default: PyErr_SetString(PyExc_RuntimeError, e.what()); break;
      }
    }
  });

  m.def("cuda_available", &cuda_available, "True when this build has CUDA and a device is visible");

  nb::class_<HostArray>(m, "HostArray", "A host array of this module, exported through DLPack")
      .def("__dlpack__",
           [](nb::handle self, nb::kwargs) {  // stream, max_version, ...: a host array needs none
             const HostArray& a = nb::cast<const HostArray&>(self);
             return nb::ndarray<>(a.data.get(), a.shape.size(), a.shape.data(), self, nullptr, a.dtype,
                                  nb::device::cpu::value, 0);
           })
      .def("__dlpack_device__", [](nb::handle) { return nb::make_tuple(nb::device::cpu::value, 0); });
  m.def("host_empty", &host_empty, nb::arg("shape"), nb::arg("dtype"),
        "An uninitialised, writable host array of float32, float16 or bfloat16 (a HostArray)");

  m.def("config_defaults", [] { return config_to_dict(Config{}); }, "The ProxyAttn options and their defaults");

  m.def("workspace_bytes",
        [](const nb::dict& options, double scale, int q_heads, int kv_heads, int head_dim, const std::string& dtype,
           const std::string& device, int device_index, const std::vector<std::int32_t>& cu_seqlens,
           const std::vector<std::int32_t>& cu_seqlens_k, int page_size) {
          Problem p = make_problem(q_heads, kv_heads, head_dim, dtype, device, device_index, cu_seqlens, cu_seqlens_k);
          p.page_size = page_size;  // paged plans may pack their keys into the workspace
          return Plan::workspace_bytes(config_from_dict(options, scale), p);
        },
        nb::arg("options"), nb::arg("scale"), nb::arg("q_heads"), nb::arg("kv_heads"), nb::arg("head_dim"),
        nb::arg("dtype"), nb::arg("device"), nb::arg("device_index"), nb::arg("cu_seqlens"),
        nb::arg("cu_seqlens_k") = std::vector<std::int32_t>{}, nb::arg("page_size") = 0,
        "Workspace bytes a CUDA plan of this problem needs");

  nb::class_<PyPlan>(m, "Plan")
      .def(
          "__init__",
          [](PyPlan* self, const nb::dict& options, double scale, int q_heads, int kv_heads, int head_dim,
             const std::string& dtype, const std::string& device, int device_index,
             const std::vector<std::int32_t>& cu_seqlens, const std::vector<std::int32_t>& cu_seqlens_k,
             int page_size, std::optional<OutArray> workspace, std::uintptr_t stream) {
            const Config c = config_from_dict(options, scale);
            Problem p = make_problem(q_heads, kv_heads, head_dim, dtype, device, device_index, cu_seqlens, cu_seqlens_k);
            p.page_size = page_size;
            if (workspace && workspace->size() > 0) {
              const std::size_t bytes = workspace->size() * workspace->itemsize();
              new (self) PyPlan{workspace, Plan(c, p, workspace->data(), bytes, stream_of(stream))};
            } else {
              new (self) PyPlan{std::nullopt, Plan(c, p, stream_of(stream))};  // owns its workspace
            }
          },
          nb::arg("options"), nb::arg("scale"), nb::arg("q_heads"), nb::arg("kv_heads"),
          nb::arg("head_dim"), nb::arg("dtype"), nb::arg("device"), nb::arg("device_index"),
          nb::arg("cu_seqlens"), nb::arg("cu_seqlens_k"), nb::arg("page_size"), nb::arg("workspace").none(),
          nb::arg("stream"))
      .def_prop_ro("backend", [](const PyPlan& s) { return std::string(backend_name(s.plan.backend())); })
      .def_prop_ro("scale", [](const PyPlan& s) { return s.plan.scale(); })
      .def_prop_ro("num_blocks", [](const PyPlan& s) { return s.plan.num_blocks(); })
      .def_prop_ro("mask_rows", [](const PyPlan& s) { return s.plan.mask_rows(); })
      .def_prop_ro("mask_capacity", [](const PyPlan& s) { return s.plan.mask_capacity(); })
      .def(
          "estimate",
          [](nb::handle h, const Array& q, const Array& k, std::uintptr_t stream,
             const std::string& framework) {
            PyPlan& self = nb::cast<PyPlan&>(h);
            const TensorView tq = view_of(q, "q"), tk = view_of(k, "k");
            {
              nb::gil_scoped_release release;
              self.last = estimate(self.plan, tq, tk, stream_of(stream));
            }
            self.has_estimate = true;
            return estimate_views(self, h, framework);
          },
          nb::arg("q"), nb::arg("k"), nb::arg("stream"), nb::arg("framework"),
          "Stages 1-3; returns views (row_offsets, col_indices, budget_blocks, kept_blocks) of the "
          "plan's workspace, valid until the next estimate")
      .def(
          "attention",
          [](PyPlan& self, const Array& q, const Array& k, const Array& v, const OutArray& out,
             const std::optional<OutArray>& lse, std::uintptr_t stream) {
            const TensorView tq = view_of(q, "q"), tk = view_of(k, "k"), tv = view_of(v, "v");
            const TensorView to = view_of(out, "out"), tl = optional_view(lse, "lse");
            {
              nb::gil_scoped_release release;
              self.last = attention(self.plan, tq, tk, tv, to, tl, stream_of(stream));
            }
            self.has_estimate = true;
          },
          nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse").none(),
          nb::arg("stream"))
      .def(
          "sparse_attention",
          [](PyPlan& self, const Array& q, const Array& k, const Array& v, const Array& row_offsets,
             const Array& col_indices, const OutArray& out, const std::optional<OutArray>& lse,
             std::uintptr_t stream) {
            const BlockMask mask = mask_of(self, row_offsets, col_indices);
            const TensorView tq = view_of(q, "q"), tk = view_of(k, "k"), tv = view_of(v, "v");
            const TensorView to = view_of(out, "out"), tl = optional_view(lse, "lse");
            nb::gil_scoped_release release;
            sparse_attention(self.plan, tq, tk, tv, mask, to, tl, stream_of(stream));
          },
          nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("row_offsets"), nb::arg("col_indices"),
          nb::arg("out"), nb::arg("lse").none(), nb::arg("stream"))
      .def(
          "dense_attention",
          [](PyPlan& self, const Array& q, const Array& k, const Array& v, const OutArray& out,
             const std::optional<OutArray>& lse, std::uintptr_t stream) {
            const TensorView tq = view_of(q, "q"), tk = view_of(k, "k"), tv = view_of(v, "v");
            const TensorView to = view_of(out, "out"), tl = optional_view(lse, "lse");
            nb::gil_scoped_release release;
            dense_attention(self.plan, tq, tk, tv, to, tl, stream_of(stream));
          },
          nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse").none(),
          nb::arg("stream"))
      .def(
          "paged",  // attention (dense=False) or dense attention over paged keys and values
          [](PyPlan& self, const Array& q, const Array& k_cache, const Array& v_cache, const Array& block_table,
             const OutArray& out, const std::optional<OutArray>& lse, bool dense, std::uintptr_t stream) {
            const KvCache kv{view_of(k_cache, "k_cache"), view_of(v_cache, "v_cache"),
                             view_of(block_table, "block_table")};
            const TensorView tq = view_of(q, "q"), to = view_of(out, "out"), tl = optional_view(lse, "lse");
            {
              nb::gil_scoped_release release;
              if (dense)
                dense_attention(self.plan, tq, kv, to, tl, stream_of(stream));
              else
                self.last = attention(self.plan, tq, kv, to, tl, stream_of(stream));
            }
            self.has_estimate = self.has_estimate || !dense;
          },
          nb::arg("q"), nb::arg("k_cache"), nb::arg("v_cache"), nb::arg("block_table"), nb::arg("out"),
          nb::arg("lse").none(), nb::arg("dense"), nb::arg("stream"))
      .def(
          "stats",
          [](PyPlan& self, std::uintptr_t stream) {
            if (!self.has_estimate)
              throw Error(ErrorCode::invalid_argument, "stats: this plan has run no estimate yet");
            HostEstimate h;
            {
              nb::gil_scoped_release release;
              h = to_host(self.plan, self.last, stream_of(stream));
            }
            std::vector<double> density(h.kept_blocks.size());
            for (int s = 0; s < h.num_seqs; ++s)
              for (int x = 0; x < h.q_heads; ++x) density[s * h.q_heads + x] = h.density(s, x);
            return nb::make_tuple(h.num_seqs, h.q_heads, h.budget_blocks, h.kept_blocks,
                                  h.causal_blocks, density, h.density());
          },
          nb::arg("stream"),
          "Host copy of the last estimate's per-head numbers (synchronises the stream): "
          "(num_seqs, q_heads, budget_blocks, kept_blocks, causal_blocks, density, total density)");
}
