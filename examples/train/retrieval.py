"""A synthetic long-range retrieval task: key-value pairs planted far apart in long noise, the
keys asked at the end. Only attention that reaches back to the planted pair can answer.

Tokens (the task's own vocabulary, `vocab_size` entries): noise tokens, one pair token per
(key, value), one query token per key, one answer token per value. A sequence of N + 1 tokens
(inputs the first N, targets the last N) is noise with `n_pairs` pair tokens at random positions
of the body (distinct keys, random values) and a tail of `n_queries` "query answer" couples that
ask for planted keys in random order. Only the answers are targets (every other target is -100),
so chance is 1 / n_values.

A pair is one token so that one attention hop answers a query (match the key, read the value):
the task measures whether attention still reaches the planted token, not how long a small model
takes to discover a two-head induction circuit. The sizes come from trials on the CPU (dense, a
2-layer model of width 64, batch 16): at N = 256 a two-token "key value" version and versions
with 16 planted pairs or 512 pair tokens had not left chance after 100-400 steps, while 4 pairs
of 128 pair tokens did after about 150 steps (33% accuracy at step 225, chance 12.5%); the
defaults here (4 pairs of 64 pair tokens) left chance at N = 512 after about 150 steps too.
Fewer pairs per sequence make the first signal stronger: attention spread evenly over the pairs
already puts 1/n_pairs of its weight on the right one. A model for this task also needs a large
rotary base, so that a key still matches its query after 8K tokens of rotation.

With Lighthouse a query reads a pair exactly only if the selection refines down to the pair's
token; left at a pooled level, the pair is a mean with its 3 (level 1) or 15 (level 2) noise
neighbours, and dropped it is gone: accuracy by distance shows where that happens.

Sequences are a pure function of (seed, step) like the corpus batches; the evaluation set has
its own stream, disjoint from every training step.
"""
from dataclasses import asdict, dataclass

import numpy as np

EVAL_STREAM = 0x6576616C  # "eval"


@dataclass
class RetrievalTask:
    seq_len: int = 8192
    n_pairs: int = 4
    n_queries: int = 4
    n_noise: int = 16       # noise alphabet
    n_keys: int = 8
    n_values: int = 8

    # token ranges: noise, then one pair token per (key, value), one query token per key, one
    # answer token per value
    @property
    def pair0(self):
        return self.n_noise

    @property
    def query0(self):
        return self.pair0 + self.n_keys * self.n_values

    @property
    def answer0(self):
        return self.query0 + self.n_keys

    @property
    def vocab_size(self):
        return self.answer0 + self.n_values

    def validate(self):
        if not 1 <= self.n_queries <= self.n_pairs <= self.n_keys:
            raise ValueError(f"need 1 <= n_queries ({self.n_queries}) <= n_pairs ({self.n_pairs}) "
                             f"<= n_keys ({self.n_keys})")
        if self.seq_len + 1 - 2 * self.n_queries < 4 * self.n_pairs:
            raise ValueError(f"sequence length {self.seq_len} is too short for {self.n_pairs} pairs")

    def to_dict(self):
        return asdict(self)


def make_sequences(rng, batch, task):
    """-> x [B, N], y [B, N] (int64, -100 except at answers), qpos [B, Q] (input positions whose
    target is an answer), dist [B, Q] (tokens from the planted pair to its query)."""
    task.validate()
    n, p, q = task.seq_len, task.n_pairs, task.n_queries
    tokens = rng.integers(0, task.n_noise, size=(batch, n + 1), dtype=np.int64)
    body = n + 1 - 2 * q
    y = np.full((batch, n), -100, dtype=np.int64)
    qpos = np.empty((batch, q), dtype=np.int64)
    dist = np.empty((batch, q), dtype=np.int64)
    for b in range(batch):
        keys = rng.choice(task.n_keys, size=p, replace=False)
        values = rng.integers(0, task.n_values, size=p)
        pos = rng.choice(body, size=p, replace=False)
        tokens[b, pos] = task.pair0 + keys * task.n_values + values
        asked = rng.choice(p, size=q, replace=False)
        kpos = body + 2 * np.arange(q)
        tokens[b, kpos] = task.query0 + keys[asked]
        tokens[b, kpos + 1] = task.answer0 + values[asked]
        qpos[b], dist[b] = kpos, kpos - pos[asked]
        y[b, kpos] = tokens[b, kpos + 1]
    return tokens[:, :n].copy(), y, qpos, dist


def train_batch(seed, step, batch, task):
    rng = np.random.Generator(np.random.PCG64([seed, step, 0x72657472]))  # "retr"
    x, y, _, _ = make_sequences(rng, batch, task)
    return x, y


def eval_set(seed, n_seqs, task):
    rng = np.random.Generator(np.random.PCG64([seed, EVAL_STREAM, 0x72657472]))
    return make_sequences(rng, n_seqs, task)


def accuracy_by_distance(pred, y, qpos, dist, seq_len, n_buckets=8):
    """pred, y [B, N] (argmax predictions and targets), qpos, dist [B, Q] -> a dict: overall
    accuracy and per distance bucket (bucket i covers distances [i, i+1) * seq_len / n_buckets)."""
    b_idx = np.arange(pred.shape[0])[:, None]
    hit = pred[b_idx, qpos] == y[b_idx, qpos]
    bucket = np.minimum(dist * n_buckets // seq_len, n_buckets - 1)
    per = []
    for i in range(n_buckets):
        m = bucket == i
        per.append({"lo": i * seq_len // n_buckets, "hi": (i + 1) * seq_len // n_buckets,
                    "n": int(m.sum()), "accuracy": float(hit[m].mean()) if m.any() else None})
    return {"accuracy": float(hit.mean()), "n": int(hit.size), "by_distance": per}
