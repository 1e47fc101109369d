"""Training loop, schedule, evaluation and checkpoints for ByteLM.

- AdamW (decoupled weight decay on the matrices, none on the RMSNorm gains) with a linear warmup
  and a cosine decay to min_lr_ratio * lr at the last step.
- The attention mode is a function of the step (`TrainConfig.mode_at`): Lighthouse before
  `dense_from_step`, dense from it on. A run can therefore switch at any step, and a checkpoint
  taken under Lighthouse resumes dense by loading it with another `dense_from_step`.
- Data are a pure function of (seed, step) (corpus.py, retrieval.py), so the data position of a
  checkpoint is its step.
- A checkpoint holds the model, the optimizer and scheduler states, the step, the tokens and
  training time so far, the loss history, the RNG states (Python, NumPy, torch CPU and CUDA) and
  the configurations; loading refuses a checkpoint of another model, another data source or
  another schedule, so a resumed run continues the same run.

Determinism (`configure_determinism`): the same seed gives the same initial weights, the same
batches and, on the CPU, the same losses to the bit (the library's CPU backend has one writer per
output element). On CUDA, torch's own ops run their deterministic algorithms, and what remains
non-deterministic is inside cuDNN's attention backward: for long sequences (from about 8K
entries) the library uses cuDNN's graph with an fp32 dQ accumulator filled with atomic adds,
whose summation order varies, so dq (and everything after it) can differ in the last bits from
run to run; the deterministic graph's workspace grows as B*H*N^2*2 bytes, which does not fit at
these lengths. Forward passes, and therefore evaluation losses, are bit-reproducible.
"""
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch

from model import ATTENTION_MODES, ByteLM, ModelConfig, autocast_context, lm_loss

CHECKPOINT_FORMAT = "lighthouse-train-checkpoint/1"


def configure_determinism(seed):
    """Seeds every generator and makes torch pick deterministic algorithms. Call it before the
    first CUDA operation of the process (cuBLAS reads CUBLAS_WORKSPACE_CONFIG once)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # warn_only: the library's op is outside torch's list; a torch op without a deterministic
    # kernel warns instead of stopping a measurement
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 100
    batch: int = 1
    seq_len: int = 4096
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    attention: str = "lighthouse"            # the mode before dense_from_step
    dense_from_step: Optional[int] = None    # steps >= this run dense (the dense resume)

    def mode_at(self, step):
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.attention == "dense" or (self.dense_from_step is not None and step >= self.dense_from_step):
            return "dense"
        return "lighthouse"

    def to_dict(self):
        return asdict(self)


# Fields a resumed run may change: which attention runs from where. Everything else defines the
# run (schedule, data, optimizer) and must match the checkpoint.
RESUMABLE_CHANGES = ("attention", "dense_from_step")


class WarmupCosine:
    """LambdaLR factor: linear warmup to 1 over warmup_steps, cosine to min_ratio at `steps`."""

    def __init__(self, steps, warmup_steps, min_ratio):
        self.steps, self.warmup_steps, self.min_ratio = steps, warmup_steps, min_ratio

    def __call__(self, step):
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = min((step - self.warmup_steps) / max(self.steps - self.warmup_steps, 1), 1.0)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class CorpusData:
    """Training batches of a byte corpus (corpus.Corpus)."""

    def __init__(self, corpus):
        self.corpus = corpus

    def batch(self, seed, step, batch, seq_len):
        return self.corpus.train_batch(seed, step, batch, seq_len)

    def describe(self):
        return {"kind": "corpus", "fingerprint": self.corpus.fingerprint}


class RetrievalData:
    """Training batches of the retrieval task (retrieval.RetrievalTask)."""

    def __init__(self, task):
        import retrieval
        self.task, self._retrieval = task, retrieval

    def batch(self, seed, step, batch, seq_len):
        if seq_len != self.task.seq_len:
            raise ValueError(f"the retrieval task has seq_len {self.task.seq_len}, the run {seq_len}")
        return self._retrieval.train_batch(seed, step, batch, self.task)

    def describe(self):
        return {"kind": "retrieval", **self.task.to_dict()}


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, data, device, log=None):
        self.model_cfg, self.cfg, self.data, self.device = model_cfg, cfg, data, torch.device(device)
        self.log = log or (lambda *_: None)
        cfg.mode_at(0)  # validates the mode
        torch.manual_seed(cfg.seed)
        self.model = ByteLM(model_cfg).to(self.device)
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
            fused=self.device.type == "cuda")
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, WarmupCosine(cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
        self.step = 0
        self.tokens = 0
        self.train_seconds = 0.0
        self.history = []

    # ---- training -----------------------------------------------------------------------------

    def _to_device(self, a):
        return torch.from_numpy(a).to(self.device, non_blocking=True)

    def train_step(self):
        """One optimizer step; returns its record (step, tokens, loss, lr, mode, seconds)."""
        mode = self.cfg.mode_at(self.step)
        self.model.set_attention_mode(mode)
        self.model.train()
        x, y = self.data.batch(self.cfg.seed, self.step, self.cfg.batch, self.cfg.seq_len)
        _sync(self.device)
        t0 = time.perf_counter()
        x, y = self._to_device(x), self._to_device(y)
        with autocast_context(self.device):
            loss = lm_loss(self.model(x), y)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()
        loss_value = loss.item()  # waits for the step
        _sync(self.device)
        dt = time.perf_counter() - t0
        self.step += 1
        self.tokens += x.numel()
        self.train_seconds += dt
        rec = {"step": self.step, "tokens": self.tokens, "loss": loss_value, "lr": lr, "mode": mode,
               "grad_norm": float(gnorm), "step_seconds": dt, "train_seconds": self.train_seconds}
        self.history.append(rec)
        return rec

    def run(self, until_step, deadline=None, on_step=None):
        """Trains until self.step reaches `until_step` (at most cfg.steps) or time.monotonic()
        passes `deadline`, calling on_step(record) after each step. Returns True if it stopped
        for the deadline."""
        while self.step < min(until_step, self.cfg.steps):
            if deadline is not None and time.monotonic() >= deadline:
                self.log(f"  stopped at step {self.step} of {until_step}: time budget reached")
                return True
            rec = self.train_step()
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(f"loss is {rec['loss']} at step {rec['step']}")
            if on_step:
                on_step(rec)
        return False

    # ---- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def _logits(self, x, mode):
        self.model.set_attention_mode(mode)
        self.model.eval()
        with autocast_context(self.device):
            return self.model(self._to_device(x))

    def evaluate(self, x, y, mode, predictions=False):
        """Mean cross-entropy (nats per target) over rows of x, y [E, N] (targets -100 are not
        counted), `batch` rows at a time; with predictions=True also the argmax predictions."""
        total, count, preds = 0.0, 0, []
        for i in range(0, x.shape[0], self.cfg.batch):
            logits = self._logits(x[i:i + self.cfg.batch], mode)
            yt = self._to_device(y[i:i + self.cfg.batch])
            n = int((yt != -100).sum())
            if n:
                total += float(lm_loss(logits, yt)) * n
                count += n
            if predictions:
                preds.append(logits.argmax(-1).cpu().numpy())
        self.model.set_attention_mode(self.cfg.mode_at(self.step))
        loss = total / max(count, 1)
        return (loss, np.concatenate(preds)) if predictions else loss

    # ---- checkpoints --------------------------------------------------------------------------

    def state_dict(self):
        rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": self.model_cfg.to_dict(), "train_config": self.cfg.to_dict(),
            "data": self.data.describe(),
            "step": self.step, "tokens": self.tokens, "train_seconds": self.train_seconds,
            "history": list(self.history),
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "rng": rng,
        }

    def save(self, path):
        """Writes the checkpoint to a temporary file and renames it over `path` (never a torn file)."""
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path):
        """Restores a checkpoint of this run; the attention schedule may differ (RESUMABLE_CHANGES)."""
        st = torch.load(path, map_location=self.device, weights_only=False)
        if st.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a training checkpoint of this program (format {st.get('format')!r})")
        problems = []
        if st["model_config"] != self.model_cfg.to_dict():
            problems.append(f"model {st['model_config']} != {self.model_cfg.to_dict()}")
        if st["data"] != self.data.describe():
            problems.append(f"data {st['data']} != {self.data.describe()}")
        mine = self.cfg.to_dict()
        for key, value in st["train_config"].items():
            if key not in RESUMABLE_CHANGES and mine.get(key) != value:
                problems.append(f"{key} {value!r} != {mine.get(key)!r}")
        if problems:
            raise ValueError(f"{path} belongs to another run: " + "; ".join(problems))
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        self.step, self.tokens, self.train_seconds = st["step"], st["tokens"], st["train_seconds"]
        self.history = list(st["history"])
        rng = st["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.model.set_attention_mode(self.cfg.mode_at(self.step))
        return st
