"""Builds the package `lighthouse` (metadata in pyproject.toml).

Pure Python by default: the library is found at run time (lighthouse/_loader.py). With
LIGHTHOUSE_BUNDLE_LIB naming a built liblighthouse.so, the package carries a copy of it in
lighthouse/_lib/, which the loader takes when neither LIGHTHOUSE_LIB nor LIGHTHOUSE_LIB_DIR is
set, and the wheel is tagged for this platform (py3-none-<platform>: the package still holds no
Python extension), so installing that one wheel is all a machine of the same platform needs:

    LIGHTHOUSE_BUNDLE_LIB=$PWD/build/liblighthouse.so pip wheel --no-deps -w dist bindings/python
"""
import os
import shutil
import sys

import setuptools
from setuptools.command.build_py import build_py

BUNDLE = os.environ.get("LIGHTHOUSE_BUNDLE_LIB")
# The name the loader looks for first (its _NAMES), the library's soname on Linux.
BUNDLED_NAME = "liblighthouse.dylib" if sys.platform == "darwin" else "liblighthouse.so.0"


class BuildPyWithLibrary(build_py):
    """Copies the library named by LIGHTHOUSE_BUNDLE_LIB into the package (a link is followed)."""

    def run(self):
        super().run()
        if not BUNDLE:
            return
        if not os.path.isfile(BUNDLE):
            raise SystemExit(f"LIGHTHOUSE_BUNDLE_LIB={BUNDLE}: no such file (a built liblighthouse.so is expected)")
        target = os.path.join(self.build_lib, "lighthouse", "_lib")
        os.makedirs(target, exist_ok=True)
        shutil.copy(BUNDLE, os.path.join(target, BUNDLED_NAME))


class Distribution(setuptools.Distribution):
    """With a library inside, the package is installed as platform-specific (platlib), not pure."""

    def has_ext_modules(self):
        return bool(BUNDLE)


commands = {"build_py": BuildPyWithLibrary}
if BUNDLE:
    try:  # setuptools 70.1 and later carry bdist_wheel; before, the `wheel` package does
        from setuptools.command.bdist_wheel import bdist_wheel
    except ImportError:
        from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        """A wheel for this platform (it holds a shared library) that any Python 3 can use."""

        def get_tag(self):
            return ("py3", "none", super().get_tag()[2])

    commands["bdist_wheel"] = PlatformWheel

setuptools.setup(cmdclass=commands, distclass=Distribution)
