"""probe_timing.py - the one timing helper of the overlap probes in tests/gpu (not a test).

Imported by select_overlap_probe.py and attention_overlap_probe.py from their own folder.
"""
import statistics

import torch


def timed(fn, stream, reps):
    """Median ms of fn() between events on `stream`, `reps` times after two warm-ups."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(stream)
        fn()
        b.record(stream)
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)
