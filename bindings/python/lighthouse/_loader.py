"""Finds and loads liblighthouse, the way the Rust and Julia bindings do.

In order, the first that loads wins:
  1. LIGHTHOUSE_LIB: a path to the library, or a name for the system loader (as Lighthouse.jl);
  2. LIGHTHOUSE_LIB_DIR: a directory holding liblighthouse.so (a build directory, an install's
     lib/; as lighthouse-sys);
  3. the copy this package carries in lighthouse/_lib/, where it was built with one
     (LIGHTHOUSE_BUNDLE_LIB: setup.py);
  4. the libdir of the installed lighthouse.pc (`pkg-config --variable=libdir lighthouse`;
     PKG_CONFIG names another pkg-config, PKG_CONFIG_PATH finds a non-system install);
  5. the system loader (LD_LIBRARY_PATH, ld.so.cache, the default directories).
The first two are explicit: when one is set and fails, nothing else is tried, so a developer
build is never silently replaced by an installed copy. A failure lists every attempt and why.
"""
import ctypes
import os
import shutil
import subprocess
import sys
import threading

from . import _capi

_NAMES = ("liblighthouse.dylib",) if sys.platform == "darwin" else ("liblighthouse.so.0", "liblighthouse.so")
# Where a wheel built with LIGHTHOUSE_BUNDLE_LIB keeps its copy of the library (setup.py).
_BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib")


class LibraryNotFoundError(OSError):
    """liblighthouse could not be loaded; the message lists what was tried."""


class _Loaded:
    def __init__(self, cdll, path, how, missing):
        self.cdll = cdll
        self.path = path
        self.how = how
        self.missing = frozenset(missing)


_lock = threading.Lock()
_loaded = None


def _try(path, attempts, how):
    try:
        return ctypes.CDLL(path)
    except OSError as e:
        attempts.append(f"{how}: {path}: {e}")
        return None


def _pkg_config_libdir(attempts):
    tool = os.environ.get("PKG_CONFIG") or "pkg-config"
    if shutil.which(tool) is None:
        attempts.append(f"pkg-config: {tool} is not installed")
        return None
    try:
        run = subprocess.run([tool, "--variable=libdir", "lighthouse"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        attempts.append(f"pkg-config: running {tool} failed: {e}")
        return None
    libdir = run.stdout.strip()
    if run.returncode != 0 or not libdir:
        why = run.stderr.strip().splitlines()[0] if run.stderr.strip() else f"exit status {run.returncode}"
        attempts.append(f"pkg-config: `{tool} --variable=libdir lighthouse` failed ({why})")
        return None
    return libdir


def _from_dir(libdir, attempts, how):
    """The library in directory `libdir` (liblighthouse.so.0, else liblighthouse.so)."""
    for name in _NAMES:
        path = os.path.join(libdir, name)
        if not os.path.exists(path):
            attempts.append(f"{how}: {path} does not exist")
            continue
        cdll = _try(path, attempts, how)
        if cdll is not None:
            return cdll, path, how
    return None


def _bundled(attempts):
    """The copy of the library this package carries (a wheel built with LIGHTHOUSE_BUNDLE_LIB)."""
    if os.path.isdir(_BUNDLED_DIR):
        return _from_dir(_BUNDLED_DIR, attempts, "bundled")
    attempts.append("bundled: this package carries no library (a wheel built with LIGHTHOUSE_BUNDLE_LIB does)")
    return None


def _installed(attempts):
    """The library in the libdir of the installed lighthouse.pc."""
    libdir = _pkg_config_libdir(attempts)
    return libdir and _from_dir(libdir, attempts, "pkg-config")


def _system(attempts):
    """The library by name, through the system loader."""
    for name in _NAMES:
        cdll = _try(name, attempts, "system loader")
        if cdll is not None:
            return cdll, name, "system loader"
    return None


def _find():
    """-> (CDLL, path, how) or raises LibraryNotFoundError naming every attempt."""
    attempts = []
    lib, libdir = os.environ.get("LIGHTHOUSE_LIB"), os.environ.get("LIGHTHOUSE_LIB_DIR")
    if lib:
        cdll = _try(lib, attempts, "LIGHTHOUSE_LIB")
        found = cdll and (cdll, lib, "LIGHTHOUSE_LIB")
    elif libdir:
        found = _from_dir(libdir, attempts, "LIGHTHOUSE_LIB_DIR")
    else:
        attempts.append("LIGHTHOUSE_LIB and LIGHTHOUSE_LIB_DIR are not set")
        found = _bundled(attempts) or _installed(attempts) or _system(attempts)
    if found:
        return found
    raise LibraryNotFoundError(
        "liblighthouse could not be loaded. Tried, in order:\n  - " + "\n  - ".join(attempts) +
        "\nSet LIGHTHOUSE_LIB to the library's path (e.g. build/liblighthouse.so), or "
        "LIGHTHOUSE_LIB_DIR to its directory, or install it (cmake --install) where pkg-config "
        "or the system loader finds it, or install a wheel that carries it (LIGHTHOUSE_BUNDLE_LIB: "
        "bindings/python/setup.py).")


def load():
    """The loaded library (loaded on first use, once per process)."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                cdll, path, how = _find()
                _loaded = _Loaded(cdll, path, how, _capi.bind(cdll))
    return _loaded


def function(name):
    """The library's function `name`; a library without it (older than this binding) raises."""
    loaded = load()
    if name in loaded.missing:
        raise AttributeError(
            f"the loaded liblighthouse ({loaded.path}) has no {name}: it is older than this binding")
    return getattr(loaded.cdll, name)


def has(name):
    """Whether the loaded library exports `name` (features that newer libraries add)."""
    return name not in load().missing
