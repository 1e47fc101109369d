#!/usr/bin/env python3
"""The Python package as a wheel, built and installed the way a user does it (pip, offline):

  check_python_wheel.py LIBRARY SOURCE

SOURCE (bindings/python) is copied to a temporary directory (a build writes into its source
tree) and built twice with `pip wheel --no-build-isolation`: plainly, a pure wheel
(py3-none-any) without a library; with LIGHTHOUSE_BUNDLE_LIB=LIBRARY, a wheel for this platform
(py3-none-<platform>) whose lighthouse/_lib/liblighthouse.so.0 is LIBRARY byte for byte. The
second is installed with `pip install --target` and imported by a fresh interpreter with none of
the library-finding variables set: it must load its own copy ("bundled") and plan on the CPU;
with LIGHTHOUSE_LIB_DIR set, that directory's library wins.
Exits 77 (skipped) where this interpreter cannot build a wheel offline (no pip, no setuptools,
or a setuptools before 70.1 without the `wheel` package)."""
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

FINDING = ("LIGHTHOUSE_LIB", "LIGHTHOUSE_LIB_DIR", "LIGHTHOUSE_BUNDLE_LIB", "PKG_CONFIG", "PKG_CONFIG_PATH",
           "LD_LIBRARY_PATH", "PYTHONPATH")


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


def fail(why):
    print(f"FAIL: {why}")
    sys.exit(1)


def can_build_wheels():
    if importlib.util.find_spec("pip") is None:
        skip("this Python has no pip")
    if importlib.util.find_spec("setuptools") is None:
        skip("this Python has no setuptools")
    from importlib.metadata import version as installed  # importing setuptools here would patch distutils
    text = installed("setuptools")
    if tuple(int(p) for p in text.split(".")[:2] if p.isdigit()) < (70, 1) and importlib.util.find_spec("wheel") is None:
        skip(f"setuptools {text} needs the `wheel` package to build wheels (scripts/install-deps.sh installs it)")


def run(args, env, what):
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        fail(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def build(source, dist, env):
    """pip wheel of `source` into the empty directory `dist`; -> the wheel's path."""
    os.makedirs(dist)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", dist, os.path.abspath(source)], env, "pip wheel")
    wheels = os.listdir(dist)
    if len(wheels) != 1:
        fail(f"pip wheel made {wheels}, not one wheel")
    return os.path.join(dist, wheels[0])


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    if len(sys.argv) != 3:
        fail("usage: check_python_wheel.py LIBRARY SOURCE")
    library, source = os.path.realpath(sys.argv[1]), sys.argv[2]
    can_build_wheels()
    env = {k: v for k, v in os.environ.items() if k not in FINDING}
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        shutil.copytree(source, src, ignore=shutil.ignore_patterns("tests", "__pycache__", "build", "*.egg-info"))

        pure = build(src, os.path.join(tmp, "pure"), env)
        with zipfile.ZipFile(pure) as z:
            bundled = [n for n in z.namelist() if n.startswith("lighthouse/_lib/")]
        if not os.path.basename(pure).endswith("-py3-none-any.whl") or bundled:
            fail(f"the plain build should be a pure wheel without a library: {os.path.basename(pure)}, {bundled}")
        shutil.rmtree(os.path.join(src, "build"), ignore_errors=True)  # the next build starts clean

        wheel = build(src, os.path.join(tmp, "bundled"), dict(env, LIGHTHOUSE_BUNDLE_LIB=library))
        name = os.path.basename(wheel)
        if not name.endswith(f"-py3-none-{platform}.whl"):
            fail(f"the wheel with a library should be tagged py3-none-{platform}: {name}")
        with zipfile.ZipFile(wheel) as z:
            inside = z.read("lighthouse/_lib/liblighthouse.so.0")
        if hashlib.sha256(inside).hexdigest() != digest(library):
            fail("lighthouse/_lib/liblighthouse.so.0 in the wheel is not the library it was built with")

        site = os.path.join(tmp, "site")
        run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
             "-q", "--target", site, wheel], env, "pip install --target")
        code = ("import lighthouse as lh; path, how = lh.library_path(); print(how, path); "
                "plan = lh.Context('cpu').plan(seq_len=2048, heads=2, head_dim=32, levels=2, pooling=4, "
                "topk=128); print('saved bytes', plan.info.saved_bytes)")
        out = run([sys.executable, "-c", code], dict(env, PYTHONPATH=site, PKG_CONFIG="/nonexistent/pkg-config"),
                  "importing the installed wheel")
        first = out.splitlines()[0].split(" ", 1)
        if first[0] != "bundled" or not os.path.realpath(first[1]).startswith(os.path.realpath(site)):
            fail(f"the installed wheel did not load its own library: {out}")
        explicit = run([sys.executable, "-c", "import lighthouse as lh; print(lh.library_path()[1])"],
                       dict(env, PYTHONPATH=site, LIGHTHOUSE_LIB_DIR=os.path.dirname(library)),
                       "importing the installed wheel with LIGHTHOUSE_LIB_DIR set").strip()
        if explicit != "LIGHTHOUSE_LIB_DIR":
            fail(f"LIGHTHOUSE_LIB_DIR must win over the wheel's own library, but {explicit} did")
        print(f"PASS: {os.path.basename(pure)}; {name} carries the library, and installed it loads it: "
              + " ".join(out.split()) + "; LIGHTHOUSE_LIB_DIR still wins over it")


if __name__ == "__main__":
    main()
