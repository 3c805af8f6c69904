# Makes python/ importable and checks that the C library exists. Point PROXYATTN_LIB at a built
# libproxyattn_c.so, or build it at <repo>/build (cmake --build build --target proxyattn_c).
import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="session")
def pa():
    import proxyattn_ctypes
    path = proxyattn_ctypes.library_path()
    if not os.path.exists(path):
        pytest.fail(f"libproxyattn_c.so not found at {path}: build the proxyattn_c target or set PROXYATTN_LIB")
    return proxyattn_ctypes
