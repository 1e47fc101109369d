"""A byte-level corpus built deterministically from the text files under one directory.

The GPU machines cannot download anything, so the corpus is made from what every such machine
has: the Python sources of its installed packages (the default root is the running
interpreter's site-packages). The build is a pure function of the files' paths and contents:

- files: every regular file under ROOT whose name ends with one of SUFFIXES, found by a walk in
  sorted order (no symlinks followed, __pycache__ skipped), named by their path relative to ROOT;
- sample: when they hold more than MAX_BYTES, the files are ranked by sha256("sample:" + path)
  and taken in that order while they fit, so the cap samples every package instead of the
  alphabetically first ones;
- split: a file is held out when sha256(path) mod 1000 < HELDOUT_PERMILLE, so no held-out file
  shares text with a training file and the split does not move when other files come or go;
- bytes: each part is its files' contents in path order, each followed by a NUL byte (the
  document separator; NUL does not occur in source text);
- fingerprint: sha256 over every included file's path, part and contents, in order. Two builds
  with the same fingerprint are the same corpus byte for byte.

Batches are a pure function of (seed, step): window offsets are drawn from a generator seeded by
both, so a resumed run reads exactly the data the uninterrupted run would have read.
"""
import hashlib
import os
import stat
import sysconfig
import time
from dataclasses import dataclass, field

import numpy as np

SEPARATOR = b"\0"


def default_root():
    return sysconfig.get_paths()["purelib"]


def _path_hash(prefix, rel):
    return int.from_bytes(hashlib.sha256((prefix + rel).encode("utf-8", "surrogateescape")).digest()[:8],
                          "little")


def list_files(root, suffixes):
    """Sorted (relative path, size) of the regular files under root with one of the suffixes."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith(suffixes):
                continue
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                out.append((os.path.relpath(full, root), st.st_size))
    out.sort()
    return out


@dataclass
class Corpus:
    train: np.ndarray                 # uint8
    heldout: np.ndarray               # uint8
    fingerprint: str
    info: dict = field(default_factory=dict)

    def train_batch(self, seed, step, batch, seq_len):
        """(x, y) int64 [batch, seq_len]: random windows of the training part, y = x shifted by one."""
        return sample_windows(self.train, seed, step, batch, seq_len)

    def heldout_windows(self, n_windows, seq_len):
        """(x, y) int64 [n_windows, seq_len]: windows at evenly spaced offsets of the held-out part."""
        span = len(self.heldout) - seq_len - 1
        if span < 0:
            raise ValueError(f"the held-out part has {len(self.heldout)} bytes, fewer than one "
                             f"window of {seq_len + 1}: build a larger corpus")
        offsets = [i * span // max(n_windows - 1, 1) for i in range(n_windows)]
        return _windows(self.heldout, offsets, seq_len)


def _windows(data, offsets, seq_len):
    x = np.stack([data[o:o + seq_len] for o in offsets]).astype(np.int64)
    y = np.stack([data[o + 1:o + seq_len + 1] for o in offsets]).astype(np.int64)
    return x, y


def sample_windows(data, seed, step, batch, seq_len):
    span = len(data) - seq_len - 1
    if span < 0:
        raise ValueError(f"the training part has {len(data)} bytes, fewer than one window of "
                         f"{seq_len + 1}: build a larger corpus")
    rng = np.random.Generator(np.random.PCG64([seed, step, 0x636f72707573]))  # "corpus"
    offsets = rng.integers(0, span + 1, size=batch)
    return _windows(data, offsets.tolist(), seq_len)


def build_corpus(root=None, max_bytes=512 << 20, heldout_permille=50, suffixes=(".py",), log=None):
    root = os.path.abspath(root or default_root())
    t0 = time.monotonic()
    files = list_files(root, tuple(suffixes))
    if not files:
        raise ValueError(f"no files ending with {suffixes} under {root}")
    total, n_found = sum(size for _, size in files), len(files)
    sampled = total > max_bytes
    if sampled:
        keep, used = set(), 0
        for rel, size in sorted(files, key=lambda f: (_path_hash("sample:", f[0]), f[0])):
            if used + size <= max_bytes:
                keep.add(rel)
                used += size
        files = [f for f in files if f[0] in keep]
    parts = {"train": [], "heldout": []}
    digest = hashlib.sha256()
    counts = {"train": 0, "heldout": 0}
    for rel, _ in files:
        with open(os.path.join(root, rel), "rb") as fh:
            data = fh.read()
        part = "heldout" if _path_hash("", rel) % 1000 < heldout_permille else "train"
        parts[part].append(data)
        parts[part].append(SEPARATOR)
        counts[part] += 1
        relb = rel.encode("utf-8", "surrogateescape")
        digest.update(b"%s\0%s\0%d\0" % (relb, part.encode(), len(data)))
        digest.update(data)
    train = np.frombuffer(b"".join(parts["train"]), dtype=np.uint8)
    heldout = np.frombuffer(b"".join(parts["heldout"]), dtype=np.uint8)
    info = {
        "root": root, "suffixes": list(suffixes), "max_bytes": max_bytes,
        "heldout_permille": heldout_permille, "files_found": n_found,
        "bytes_found": total, "sampled": sampled,
        "train_files": counts["train"], "heldout_files": counts["heldout"],
        "train_bytes": int(train.size), "heldout_bytes": int(heldout.size),
        "build_seconds": round(time.monotonic() - t0, 2),
    }
    fp = digest.hexdigest()
    info["fingerprint"] = fp
    if log:
        log(f"corpus: {counts['train']} + {counts['heldout']} files ({train.size / 1e6:.1f} + "
            f"{heldout.size / 1e6:.1f} MB train + held-out{', sampled' if sampled else ''}) from "
            f"{root} in {info['build_seconds']} s, sha256 {fp[:16]}")
    return Corpus(train, heldout, fp, info)
