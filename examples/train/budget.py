"""Wall-clock budget of one measurement run, shared out to its phases.

A device call gives one command at most 10 minutes on a fresh machine, so the driver receives a
total budget in seconds, counted from the start of the process (imports and the corpus build
included), keeps a reserve for writing results, and gives each phase its share of what is left
when the phase starts: time a phase does not use goes to the phases after it.
"""
import time

# Set when this module is first imported: the driver imports it before torch.
PROCESS_START = time.monotonic()


class Budget:
    def __init__(self, total_s, shares, reserve_s=15.0, start=PROCESS_START):
        self.total_s, self.reserve_s, self.start = float(total_s), float(reserve_s), start
        self.shares = dict(shares)          # phase name -> weight
        self.pending = list(self.shares)    # phases not yet started, in order
        self.report = {}

    def elapsed(self):
        return time.monotonic() - self.start

    def remaining(self):
        return self.total_s - self.elapsed()

    def begin(self, name):
        """Starts phase `name`; returns its deadline (a time.monotonic() value)."""
        if name in self.pending:
            weights = sum(self.shares[p] for p in self.pending)
            share = self.shares[name] / weights if weights > 0 else 0.0
            self.pending.remove(name)
        else:
            share = 1.0
        now = time.monotonic()
        seconds = max(0.0, (self.remaining() - self.reserve_s) * share)
        self.report[name] = {"budget_s": round(seconds, 1), "started_at_s": round(self.elapsed(), 1)}
        return now + seconds

    def skip(self, name, why):
        if name in self.pending:
            self.pending.remove(name)
        self.report[name] = {"budget_s": 0.0, "status": f"skipped: {why}"}

    def end(self, name, status="done"):
        r = self.report.setdefault(name, {})
        r["used_s"] = round(self.elapsed() - r.get("started_at_s", self.elapsed()), 1)
        r["status"] = status
