# The ctypes wrapper (python/proxyattn_ctypes.py) is loaded from its file, not through sys.path,
# so that `import proxyattn` always means the installed package. Point PROXYATTN_LIB at a built
# libproxyattn_c.so, or build it at <repo>/build (cmake --build build --target proxyattn_c).
import importlib.util
import os
import pathlib

import pytest


@pytest.fixture(scope="session")
def pa():
    path = pathlib.Path(__file__).resolve().parent.parent / "proxyattn_ctypes.py"
    spec = importlib.util.spec_from_file_location("proxyattn_ctypes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not os.path.exists(module.library_path()):
        pytest.fail(f"libproxyattn_c.so not found at {module.library_path()}: build the proxyattn_c "
                    "target or set PROXYATTN_LIB")
    return module
