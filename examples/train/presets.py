"""Sizes of the measurement run (measure.py --preset).

h100 fits the whole plan into one device call of about 9 minutes on one H100 (or H200):
- the language model (17.2M parameters): d_model 512, 6 layers, 8 query heads of 64 over 2 kv
  heads (grouped-query 4:1), SwiGLU 1408, byte vocabulary; Lighthouse with the library's
  defaults (L = 3, p = 4, topk = 2048). At 98K tokens dense attention is most of a step for a
  model this narrow, so the end-to-end gain of Lighthouse is larger than at the published 530M
  parameters, where the projections and MLP weigh more; the attention share is measured and
  reported so the two can be compared.
- the retrieval model (3.2M parameters): d_model 256, 4 layers, 4 heads of 64; Lighthouse with
  topk = 128 at N = 8192, which keeps 512 of 8192 tokens (6.25%) at full resolution, as the
  defaults keep 8192 of 98304 (8.3%) in the language model at 98K.
- the budget: a fifth for throughput (4 contexts x 2 modes), a bit over half for the loss
  curves, the rest for retrieval. Steps are planned from measured step times.

cpu-tiny is the same plan at sizes the library's CPU backend (fp32) runs in about a minute: it
exercises every line of the driver, not the numbers.
"""
from model import ModelConfig
from retrieval import RetrievalTask

RETRIEVAL_H100 = RetrievalTask(seq_len=8192)
RETRIEVAL_CPU = RetrievalTask(seq_len=512)

PRESETS = {
    "h100": {
        "model": ModelConfig(d_model=512, n_layers=6, n_heads=8, n_kv_heads=2, ffn_hidden=1408,
                             levels=3, pooling=4, topk=2048),
        "contexts": [32768, 65536, 98304, 131072],
        "loss_contexts": [98304, 65536, 32768],
        "throughput": {"warmup": 2, "steps": 3, "attn_reps": 3},
        "loss": {"batch": 1, "lr": 2e-3, "warmup_frac": 0.1, "lh_frac": 0.8, "eval_windows": 4,
                 "min_steps": 40, "max_steps": 5000},
        "retrieval_model": ModelConfig(vocab_size=RETRIEVAL_H100.vocab_size, d_model=256, n_layers=4,
                                       n_heads=4, n_kv_heads=4, ffn_hidden=704,
                                       rope_theta=1e6, levels=3, pooling=4, topk=128),
        "retrieval_task": RETRIEVAL_H100,
        "retrieval": {"batch": 16, "lr": 2e-3, "warmup_frac": 0.05, "lh_frac": 0.8, "eval_seqs": 64,
                      "n_buckets": 8, "min_steps": 100, "max_steps": 4000,
                      "pretrain_len": 512, "pretrain_batch": 64, "pretrain_max_steps": 3000,
                      "pretrain_target": 0.9, "pretrain_check": 100, "pretrain_share": 0.3},
        "shares": {"throughput": 0.2, "loss": 0.55, "retrieval": 0.25},
        "corpus_max_mb": 512,
        "time_budget": 540,
    },
    "cpu-tiny": {
        "model": ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=192,
                             levels=2, pooling=4, topk=128),
        "contexts": [512, 1024],
        "loss_contexts": [1024, 512],
        "throughput": {"warmup": 1, "steps": 2, "attn_reps": 2},
        "loss": {"batch": 1, "lr": 3e-3, "warmup_frac": 0.1, "lh_frac": 0.75, "eval_windows": 2,
                 "min_steps": 8, "max_steps": 12},
        "retrieval_model": ModelConfig(vocab_size=RETRIEVAL_CPU.vocab_size, d_model=64, n_layers=2,
                                       n_heads=4, n_kv_heads=4, ffn_hidden=192,
                                       rope_theta=1e6, levels=2, pooling=4, topk=128),
        "retrieval_task": RETRIEVAL_CPU,
        "retrieval": {"batch": 2, "lr": 3e-3, "warmup_frac": 0.1, "lh_frac": 0.8, "eval_seqs": 4,
                      "n_buckets": 4, "min_steps": 8, "max_steps": 12,
                      "pretrain_len": 128, "pretrain_batch": 4, "pretrain_max_steps": 8,
                      "pretrain_target": 0.9, "pretrain_check": 4, "pretrain_share": 0.3},
        "shares": {"throughput": 0.2, "loss": 0.45, "retrieval": 0.35},
        "corpus_max_mb": 16,
        "time_budget": 900,   # generous: the step caps above end it long before on an idle machine
    },
}
