"""A small ctypes wrapper over libproxyattn_c.so (include/proxyattn/c_api.h), for scripts that
must not depend on a compiled Python extension (the benchmarks, quick checks on a GPU box).

The library is found through $PROXYATTN_LIB, else <repo>/build/src/capi/libproxyattn_c.so.
Arrays may be torch tensors (CPU or CUDA) or numpy arrays (CPU; float32/float16, since numpy
has no bfloat16). torch and numpy are never imported here: an array is recognised through the
module that is already loaded, so either one alone is enough.

    plan = Plan(32, 8, 128, torch.bfloat16, "cuda", [0, n], gamma=0.9)
    est = plan.attention(q, k, v, out, return_estimate=True)   # q [n, 32, 128], k, v [n, 8, 128]
"""
import ctypes
import os
import pathlib
import sys

__all__ = ["Plan", "ProxyAttnError", "library_path"]


class ProxyAttnError(RuntimeError):
    """A failure reported by the library; .code is the pa_ status code."""

    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code


# --- The C structs, field for field as in c_api.h ---

class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int32), ("device", ctypes.c_int32),
                ("device_index", ctypes.c_int32), ("ndim", ctypes.c_int32),
                ("shape", ctypes.c_int64 * 4), ("stride", ctypes.c_int64 * 4)]


class _Config(ctypes.Structure):
    _fields_ = [("block_size", ctypes.c_int32), ("stride", ctypes.c_int32),
                ("proxy_groups", ctypes.c_int32), ("gamma", ctypes.c_double),
                ("min_budget_tokens", ctypes.c_int64), ("keep_sink", ctypes.c_int32),
                ("budget_mode", ctypes.c_int32), ("scale", ctypes.c_double),
                ("backend", ctypes.c_int32), ("exact_last_block", ctypes.c_int32),
                ("head_columns", ctypes.c_int32)]


class _Estimate(ctypes.Structure):
    _fields_ = [("row_offsets", ctypes.c_void_p), ("col_indices", ctypes.c_void_p),
                ("budget_blocks", ctypes.c_void_p), ("kept_blocks", ctypes.c_void_p),
                ("num_rows", ctypes.c_int64), ("device", ctypes.c_int32)]


_DTYPE_NAMES = ["float32", "float16", "bfloat16", "int32", "int64"]  # index = pa dtype code
_ITEMSIZE = [4, 2, 2, 4, 8]
_BUDGET_MODES = {"row_ratio": 0, "last_row_count": 1}
_BACKENDS = {"automatic": 0, "cpu_reference": 1, "cpu": 2, "cuda": 3}

_lib = None


def library_path():
    env = os.environ.get("PROXYATTN_LIB")
    if env:
        return env
    return str(pathlib.Path(__file__).resolve().parent.parent / "build" / "src" / "capi" / "libproxyattn_c.so")


def _load():
    global _lib
    if _lib is not None:
        return _lib
    path = library_path()
    if not os.path.exists(path):
        raise ProxyAttnError(f"libproxyattn_c.so not found at {path}: build the proxyattn_c target "
                             "or set PROXYATTN_LIB")
    lib = ctypes.CDLL(path)
    P, T, I32, I64, VP = ctypes.c_void_p, ctypes.POINTER(_Tensor), ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p
    sigs = {
        "pa_config_default": (None, [ctypes.POINTER(_Config)]),
        "pa_plan_create": (ctypes.c_int, [ctypes.POINTER(_Config), I32, I32, I32, I32, I32, I32,
                                          ctypes.POINTER(I32), I32, VP, ctypes.POINTER(P)]),
        "pa_plan_create_kv": (ctypes.c_int, [ctypes.POINTER(_Config), I32, I32, I32, I32, I32, I32,
                                             ctypes.POINTER(I32), ctypes.POINTER(I32), I32, I32, VP,
                                             ctypes.POINTER(P)]),
        "pa_dense_attention_paged": (ctypes.c_int, [P, T, T, T, T, T, T, VP]),
        "pa_attention_paged": (ctypes.c_int, [P, T, T, T, T, T, T, VP, ctypes.POINTER(_Estimate)]),
        "pa_plan_destroy": (None, [P]),
        "pa_plan_num_blocks": (I64, [P]),
        "pa_plan_mask_rows": (I64, [P]),
        "pa_plan_mask_capacity": (I64, [P]),
        "pa_plan_workspace_bytes": (ctypes.c_uint64, [P]),
        "pa_estimate": (ctypes.c_int, [P, T, T, VP, ctypes.POINTER(_Estimate)]),
        "pa_sparse_attention": (ctypes.c_int, [P, T, T, T, VP, VP, I64, T, T, VP]),
        "pa_attention": (ctypes.c_int, [P, T, T, T, T, T, VP, ctypes.POINTER(_Estimate)]),
        "pa_dense_attention": (ctypes.c_int, [P, T, T, T, T, T, VP]),
        "pa_last_error": (ctypes.c_char_p, []),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    _lib = lib
    return lib


def _check(code):
    if code != 0:
        raise ProxyAttnError(_lib.pa_last_error().decode("utf-8", "replace"), code)


# --- Arrays: torch tensors or numpy arrays, recognised without importing either ---

def _torch_tensor(x):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _numpy_array(x):
    np = sys.modules.get("numpy")
    return np is not None and isinstance(x, np.ndarray)


def _dtype_code(dtype):
    """pa dtype code of a torch dtype, numpy dtype, name or code."""
    if isinstance(dtype, int):
        return dtype
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
    elif not isinstance(dtype, str):  # a numpy dtype (.name) or scalar type (.__name__)
        name = getattr(dtype, "name", None) or getattr(dtype, "__name__", name)
    if name in _DTYPE_NAMES:
        return _DTYPE_NAMES.index(name)
    raise ProxyAttnError(f"unsupported dtype {dtype!r}; use one of {_DTYPE_NAMES}")


def _device_code(device):
    """(device code, index) of 'cpu', 'cuda', 'cuda:1', a torch.device or a code."""
    if isinstance(device, int):
        return device, 0
    s = str(device)
    if s == "cpu":
        return 0, 0
    if s.startswith("cuda"):
        if ":" in s:
            return 1, int(s.split(":")[1])
        torch = sys.modules.get("torch")
        return 1, (torch.cuda.current_device() if torch is not None else 0)
    raise ProxyAttnError(f"unsupported device {device!r}")


def _array_info(x, name):
    """(pointer, dtype code, device code, device index, shape, element strides) of an array."""
    if _torch_tensor(x):
        dev, idx = (1, x.device.index or 0) if x.is_cuda else (0, 0)
        if x.is_cuda and x.device.index is None:
            idx = sys.modules["torch"].cuda.current_device()
        return x.data_ptr(), _dtype_code(x.dtype), dev, idx, tuple(x.shape), tuple(x.stride())
    if _numpy_array(x):
        item = x.dtype.itemsize
        if any(s % item for s in x.strides):
            raise ProxyAttnError(f"{name}: strides {x.strides} are not multiples of the item size {item}")
        return (x.ctypes.data, _dtype_code(x.dtype.name), 0, 0, tuple(x.shape),
                tuple(s // item for s in x.strides))
    raise ProxyAttnError(f"{name}: expected a torch tensor or numpy array, got {type(x).__name__}")


def _tensor(x, name):
    """A pa_tensor view of x (which the caller keeps alive during the call); None stays None."""
    if x is None:
        return None
    ptr, dtype, dev, idx, shape, strides = _array_info(x, name)
    if len(shape) > 4:
        raise ProxyAttnError(f"{name}: at most 4 dimensions, got shape {list(shape)}")
    t = _Tensor()
    t.data, t.dtype, t.device, t.device_index, t.ndim = ptr, dtype, dev, idx, len(shape)
    for i, (n, s) in enumerate(zip(shape, strides)):
        t.shape[i], t.stride[i] = n, s
    return ctypes.byref(t)


class _CudaView:
    """Raw device memory presented through __cuda_array_interface__ so that torch can view it."""

    def __init__(self, ptr, shape, typestr):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False),
                                         "version": 3, "strides": None, "stream": None}


class Plan:
    """A proxyattn plan (see plan.hpp). Keyword config: block_size, stride, proxy_groups, gamma,
    min_budget_tokens, keep_sink, budget_mode ('row_ratio' | 'last_row_count'), exact_last_block,
    head_columns, scale, backend ('automatic' | 'cpu_reference' | 'cpu' | 'cuda'). stream: a cudaStream_t as an
    int; None means torch's current stream at each call."""

    def __init__(self, q_heads, kv_heads, head_dim, dtype, device, cu_seqlens, stream=None, **config):
        self._handle = None  # first, so that __del__ works whatever fails below
        lib = _load()
        cfg = _Config()
        lib.pa_config_default(ctypes.byref(cfg))
        for key, value in config.items():
            if key not in dict(_Config._fields_):
                raise TypeError(f"unknown config key {key!r}")
            for field, names in (("budget_mode", _BUDGET_MODES), ("backend", _BACKENDS)):
                if key == field and isinstance(value, str):
                    if value not in names:
                        raise ProxyAttnError(f"config.{field} must be one of {list(names)}, got {value!r}")
                    value = names[value]
            setattr(cfg, key, int(value) if key != "gamma" and key != "scale" else float(value))
        self.q_heads, self.kv_heads, self.head_dim = q_heads, kv_heads, head_dim
        self.device, self.device_index = _device_code(device)
        self.cu_seqlens = [int(c) for c in cu_seqlens]
        self._user_stream = stream
        seqs = (ctypes.c_int32 * len(self.cu_seqlens))(*self.cu_seqlens)
        handle = ctypes.c_void_p()
        _check(lib.pa_plan_create(ctypes.byref(cfg), q_heads, kv_heads, head_dim, _dtype_code(dtype),
                                  self.device, self.device_index, seqs, len(self.cu_seqlens) - 1,
                                  self._stream(), ctypes.byref(handle)))
        self._handle = handle

    # --- lifetime ---
    def close(self):
        if self._handle is not None and _lib is not None:
            _lib.pa_plan_destroy(self._handle)
        self._handle = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _plan(self):
        if self._handle is None:
            raise ProxyAttnError("the plan is closed")
        return self._handle

    def _stream(self):
        if self._user_stream is not None:
            return int(self._user_stream)
        torch = sys.modules.get("torch")
        if self.device == 1 and torch is not None and torch.cuda.is_available():
            return torch.cuda.current_stream(self.device_index).cuda_stream
        return None

    # --- sizes ---
    @property
    def num_blocks(self):
        return _lib.pa_plan_num_blocks(self._plan())

    @property
    def mask_rows(self):
        return _lib.pa_plan_mask_rows(self._plan())

    @property
    def mask_capacity(self):
        return _lib.pa_plan_mask_capacity(self._plan())

    @property
    def workspace_bytes(self):
        return _lib.pa_plan_workspace_bytes(self._plan())

    # --- calls ---
    def estimate(self, q, k, copy=True):
        """Stages 1-3. Returns dict(row_offsets, col_indices, budget, kept, num_rows) as copies
        (torch tensors on the plan's device for torch inputs, numpy arrays for numpy inputs);
        for CUDA plans this synchronises once to read the mask size. copy=False returns None
        and leaves the result in the plan only (for timing the library alone)."""
        est = _Estimate()
        _check(_lib.pa_estimate(self._plan(), _tensor(q, "q"), _tensor(k, "k"), self._stream(),
                                ctypes.byref(est)))
        return self._result(est, _torch_tensor(q)) if copy else None

    def attention(self, q, k, v, out, lse=None, return_estimate=False):
        """Stages 1-4 into out (and lse). The estimate is copied out only when asked, so that
        timing the call measures the library alone."""
        est = _Estimate()
        _check(_lib.pa_attention(self._plan(), _tensor(q, "q"), _tensor(k, "k"), _tensor(v, "v"),
                                 _tensor(out, "out"), _tensor(lse, "lse"), self._stream(),
                                 ctypes.byref(est)))
        return self._result(est, _torch_tensor(q)) if return_estimate else None

    def sparse_attention(self, q, k, v, row_offsets, col_indices, out, lse=None):
        """Stage 4 over a mask in the plan's row layout: row_offsets int64 [mask_rows + 1],
        col_indices int32, both contiguous and on the plan's device."""
        ro = self._mask_array(row_offsets, "row_offsets", 4, self.mask_rows + 1)
        ci = self._mask_array(col_indices, "col_indices", 3, None)
        _check(_lib.pa_sparse_attention(self._plan(), _tensor(q, "q"), _tensor(k, "k"), _tensor(v, "v"),
                                        ro, ci, int(col_indices.shape[0]), _tensor(out, "out"), _tensor(lse, "lse"),
                                        self._stream()))

    def dense_attention(self, q, k, v, out, lse=None):
        _check(_lib.pa_dense_attention(self._plan(), _tensor(q, "q"), _tensor(k, "k"), _tensor(v, "v"),
                                       _tensor(out, "out"), _tensor(lse, "lse"), self._stream()))

    # --- helpers ---
    def _mask_array(self, x, name, dtype, length):
        # The library cannot check a device mask without synchronising, so the cheap header
        # checks (dtype, layout, device, length) happen here.
        ptr, code, dev, idx, shape, strides = _array_info(x, name)
        if code != dtype:
            raise ProxyAttnError(f"{name} must be {_DTYPE_NAMES[dtype]}, got {_DTYPE_NAMES[code]}")
        if len(shape) != 1 or (shape[0] > 1 and strides[0] != 1):
            raise ProxyAttnError(f"{name} must be a contiguous 1-D array, got shape {list(shape)}")
        if dev != self.device or (dev == 1 and idx != self.device_index):
            raise ProxyAttnError(f"{name} is on device {dev}:{idx} but the plan is on "
                                 f"{self.device}:{self.device_index}")
        if length is not None and shape[0] != length:
            raise ProxyAttnError(f"{name} must have {length} entries (mask_rows + 1), got {shape[0]}")
        return ptr

    def _copy(self, ptr, count, code, as_torch, on_cuda):
        """A fresh array holding count elements of pa dtype `code` read from ptr."""
        if on_cuda:
            torch = sys.modules["torch"]
            typestr = "<i8" if code == 4 else "<i4"
            if count == 0:
                return torch.empty(0, dtype=torch.int64 if code == 4 else torch.int32,
                                   device=f"cuda:{self.device_index}")
            # Order the copy after the library's work when that ran on another stream.
            current, stream = torch.cuda.current_stream(self.device_index), self._stream()
            if stream is not None and stream != current.cuda_stream:
                current.wait_stream(torch.cuda.ExternalStream(stream, device=self.device_index))
            view = torch.as_tensor(_CudaView(ptr, (count,), typestr), device=f"cuda:{self.device_index}")
            return view.clone()
        nbytes = count * _ITEMSIZE[code]
        if as_torch:
            torch = sys.modules["torch"]
            dst = torch.empty(count, dtype=torch.int64 if code == 4 else torch.int32)
            dst_ptr = dst.data_ptr()
        else:
            import numpy as np
            dst = np.empty(count, dtype=np.int64 if code == 4 else np.int32)
            dst_ptr = dst.ctypes.data
        if nbytes:
            ctypes.memmove(dst_ptr, ptr, nbytes)
        return dst

    def _result(self, est, as_torch):
        on_cuda = est.device == 1
        seqs = len(self.cu_seqlens) - 1
        row_offsets = self._copy(est.row_offsets, est.num_rows + 1, 4, as_torch, on_cuda)
        nnz = int(row_offsets[-1])  # synchronises for CUDA
        budget = self._copy(est.budget_blocks, seqs * self.q_heads, 3, as_torch, on_cuda)
        kept = self._copy(est.kept_blocks, seqs * self.q_heads, 4, as_torch, on_cuda)
        return {
            "row_offsets": row_offsets,
            "col_indices": self._copy(est.col_indices, nnz, 3, as_torch, on_cuda),
            "budget": budget.reshape(seqs, self.q_heads),
            "kept": kept.reshape(seqs, self.q_heads),
            "num_rows": int(est.num_rows),
        }
