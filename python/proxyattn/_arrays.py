"""What the package needs to know about the caller's arrays: framework, device, dtype, stream,
and how to allocate outputs and workspaces with the same framework (so torch's caching allocator
serves them, which keeps CUDA-graph capture and memory accounting right).

torch, numpy, cupy and jax are recognised by the module their array type comes from; none of them
is imported unless the caller already passed one of its arrays. jax arrays cannot be written, so
a call on them writes its outputs into host arrays of the extension (_core.host_empty) and hands
them to jax through DLPack (as_framework).
"""
import sys

from . import _core

_DTYPES = ("float32", "float16", "bfloat16")


def framework(x, name):
    mod = type(x).__module__.split(".")[0]
    if mod in ("torch", "numpy", "cupy"):
        return mod
    if mod in ("jax", "jaxlib"):
        if isinstance(x, sys.modules["jax"].core.Tracer):
            raise TypeError(f"{name}: a traced jax array (inside jax.jit, vmap or grad): proxyattn runs eagerly; "
                            f"call it outside the traced function")
        return "jax"
    raise TypeError(f"{name}: expected a torch tensor, numpy array, cupy array or jax array, got {type(x).__name__}")


def dtype_name(x, name):
    s = str(x.dtype).replace("torch.", "")
    if s not in _DTYPES:
        raise ValueError(f"{name}: dtype must be float32, float16 or bfloat16, got {s}")
    return s


def device_of(x, fw):
    """('cpu' | 'cuda', index)."""
    if fw == "torch":
        if x.device.type not in ("cpu", "cuda"):
            raise ValueError(f"tensors must be on the CPU or a CUDA device, got {x.device}")
        return x.device.type, (x.device.index or 0) if x.device.type == "cuda" else 0
    if fw == "cupy":
        return "cuda", x.device.id
    if fw == "jax":
        platforms = {d.platform for d in x.devices()}
        if platforms != {"cpu"}:
            raise ValueError(f"jax arrays must be on the CPU, got one on {sorted(platforms)}; on a GPU pass torch or "
                             f"cupy arrays (torch.from_dlpack(x) shares a jax array's memory)")
    return "cpu", 0


def current_stream(fw, device):
    """The caller's current CUDA stream as an integer handle (0: the legacy default stream)."""
    kind, index = device
    if kind != "cuda":
        return 0
    if fw == "torch":
        torch = sys.modules["torch"]
        return torch.cuda.current_stream(index).cuda_stream
    if fw == "cupy":
        return sys.modules["cupy"].cuda.get_current_stream().ptr
    return 0


def empty(fw, like, shape, dtype=None):
    """An uninitialised array of `shape` on like's device; dtype None means like's dtype, else
    one of 'float32', 'int32', 'int64', 'uint8'."""
    if fw == "torch":
        torch = sys.modules["torch"]
        dt = like.dtype if dtype is None else getattr(torch, dtype)
        return torch.empty(shape, dtype=dt, device=like.device)
    if fw == "jax":  # outputs only (jax calls run on the CPU: no workspace)
        return _core.host_empty(list(shape), str(like.dtype) if dtype is None else dtype)
    xp = sys.modules["cupy" if fw == "cupy" else "numpy"]
    return xp.empty(shape, dtype=like.dtype if dtype is None else dtype)


def strides(x):
    """Strides in elements."""
    fw = framework(x, "array")
    if fw == "torch":
        return tuple(x.stride())
    if fw == "jax":  # always row-major
        out, step = [], 1
        for n in reversed(x.shape):
            out.append(step)
            step *= n
        return tuple(reversed(out))
    return tuple(s // x.itemsize for s in x.strides)


def clone(x):
    """A copy of x in its own memory, on its device."""
    return x.clone() if framework(x, "array") == "torch" else x.copy()


def as_framework(x, fw):
    """x (an output this package made: _core.host_empty's for jax) as an array of fw: jax takes
    it through DLPack; the other frameworks' outputs are theirs already."""
    if fw != "jax" or x is None:
        return x
    return sys.modules["jax"].dlpack.from_dlpack(x)


def to_numpy(x):
    """A host numpy copy of a torch or cupy array; anything else through numpy.asarray."""
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return x.detach().cpu().numpy()
    if mod == "cupy":
        return x.get()
    import numpy
    return numpy.asarray(x)


def to_int_list(x, name, limit=2 ** 31 - 1):
    """A host list of ints from a list, tuple or 1-D array (a CUDA tensor is copied back); a value
    that is not an integer, or outside [-limit - 1, limit], is an error naming the argument."""
    if x is None:
        return None
    if hasattr(x, "tolist"):
        x = x.tolist()
    if not isinstance(x, (list, tuple)):
        raise TypeError(f"{name}: expected a 1-D sequence of ints, got {type(x).__name__}")
    values = []
    for i, v in enumerate(x):
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
            raise TypeError(f"{name}: entry {i} must be an integer, got {v!r}")
        v = int(v)
        if not -limit - 1 <= v <= limit:
            raise ValueError(f"{name}: entry {i} ({v}) does not fit 32-bit offsets (at most {limit})")
        values.append(v)
    return values


def writable(x, name):
    """Refuses an array that cannot be written (a read-only numpy view, for example)."""
    flags = getattr(x, "flags", None)
    if flags is not None and hasattr(flags, "writeable") and not flags.writeable:
        raise ValueError(f"{name}: the array is read-only; pass a writable array")
