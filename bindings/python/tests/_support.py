"""Shared set-up of the binding's tests: the package from this checkout (no install needed), the
golden vectors, and a visible skip (exit 77, which ctest reports as skipped) when a module a
test file needs is missing."""
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))
GOLDEN_DIR = os.environ.get("LIGHTHOUSE_GOLDEN_DIR") or os.path.join(REPO, "tests", "golden")
SKIP = 77


def require(module, why):
    """Imports `module` or exits 77 after a SKIP line that names the interpreter and the reason."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        print(f"SKIP: {why}: {sys.executable} cannot import {module} ({e})", flush=True)
        sys.exit(SKIP)


def run(argv=None):
    """unittest's main, verbose, plus one line per test that starts with PASS, FAIL or SKIP (what
    tests/gpu/run_gpu_tests.sh counts); exits non-zero on failure."""
    import unittest

    class Result(unittest.TextTestResult):
        def _line(self, word, test, extra=""):
            self.stream.writeln(f"{word} {test.id()}{extra}")
            self.stream.flush()

        def addSuccess(self, test):
            super().addSuccess(test)
            self._line("PASS", test)

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._line("FAIL", test)

        def addError(self, test, err):
            super().addError(test, err)
            self._line("FAIL", test, " (error)")

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._line("SKIP", test, f": {reason}")

    runner = unittest.TextTestRunner(verbosity=2, resultclass=Result)
    unittest.main(module="__main__", argv=argv, testRunner=runner)
