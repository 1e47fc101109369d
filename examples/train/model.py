"""A decoder-only byte-level language model whose attention is `lighthouse.torch.attention`.

Current design: pre-norm blocks with RMSNorm, rotary position embeddings applied to q and k
before attention, a SwiGLU MLP, grouped-query attention (n_kv_heads < n_heads), no biases.
Attention runs Lighthouse or dense causal attention through the same call, and the mode can be
switched at any step (`set_attention_mode`), which is what a dense resume needs: the same
weights, the same tensors, plain causal attention over all tokens.

Precision: parameters stay fp32 (they are the master weights AdamW updates) and the forward runs
under `torch.autocast(bfloat16)` on CUDA; see `autocast_context`. q, k and v are cast to the
compute dtype explicitly before the attention op, because autocast does not cast the inputs of
custom ops and the rotary embedding computes in fp32. On the CPU everything is fp32 (the
library's CPU backend is fp32).
"""
import contextlib
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import lighthouse.torch as lht

ATTENTION_MODES = ("lighthouse", "dense")


@dataclass
class ModelConfig:
    vocab_size: int = 256          # bytes
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int = 2            # grouped-query attention; = n_heads for plain multi-head
    ffn_hidden: int = 1408         # SwiGLU width, about 8/3 d_model rounded to a multiple of 64
    rope_theta: float = 500000.0   # a long-context base: the slowest rotation spans ~3M tokens
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # Lighthouse parameters (docs/spec.md): pyramid levels, pooling factor, selection size
    levels: int = 3
    pooling: int = 4
    topk: int = 2048
    scorer: str = "norm"

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    def validate(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")

    def lighthouse_granule(self):
        """Lighthouse needs N to be a multiple of this (pooling^(levels-1) * topk/128)."""
        return self.pooling ** (self.levels - 1) * (self.topk // 128)

    def lighthouse_min_len(self):
        """The shortest N whose coarsest level holds 128 entries per tile."""
        return self.lighthouse_granule() * 128

    def check_seq_len(self, n):
        g = self.lighthouse_granule()
        if n % g or n < self.lighthouse_min_len():
            raise ValueError(
                f"sequence length {n} does not suit Lighthouse with levels={self.levels}, "
                f"pooling={self.pooling}, topk={self.topk}: it must be a multiple of {g} and at "
                f"least {self.lighthouse_min_len()}")

    def to_dict(self):
        return asdict(self)


def autocast_context(device):
    """bf16 autocast on CUDA (fp32 master weights), nothing on the CPU (fp32 throughout)."""
    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compute_dtype(device):
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


class Rotary(nn.Module):
    """Rotary position embedding (rotate-half form), tables in fp32, cached per length."""

    def __init__(self, head_dim, theta):
        super().__init__()
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv.float(), persistent=False)
        self._cache = {}

    def tables(self, n, device):
        key = (n, str(device))
        if key not in self._cache:
            self._cache.clear()  # one length at a time: the tables of 128K tokens are 32 MB each
            with torch.autocast(torch.device(device).type, enabled=False):
                # positions in float64 so that the angles stay exact past 2^24 tokens
                pos = torch.arange(n, dtype=torch.float64, device=device)
                ang = torch.outer(pos, self.inv_freq.to(device=device, dtype=torch.float64))
                self._cache[key] = (ang.cos().float()[None, :, None, :],
                                    ang.sin().float()[None, :, None, :])
        return self._cache[key]

    def forward(self, x):
        """x [B, N, H, D] -> the same shape, fp32."""
        cos, sin = self.tables(x.shape[1], x.device)
        x = x.float()
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg, rotary):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.d_model, cfg.head_dim
        self.qkv = nn.Linear(d, (cfg.n_heads + 2 * cfg.n_kv_heads) * hd, bias=False)
        self.out = nn.Linear(cfg.n_heads * hd, d, bias=False)
        self.rotary = rotary
        self.mode = "lighthouse"

    def forward(self, x):
        b, n, _ = x.shape
        c, hd = self.cfg, self.cfg.head_dim
        q, k, v = self.qkv(x).split([c.n_heads * hd, c.n_kv_heads * hd, c.n_kv_heads * hd], dim=-1)
        dt = compute_dtype(x.device)
        q = self.rotary(q.view(b, n, c.n_heads, hd)).to(dt)
        k = self.rotary(k.view(b, n, c.n_kv_heads, hd)).to(dt)
        v = v.reshape(b, n, c.n_kv_heads, hd).to(dt).contiguous()
        y = lht.attention(q, k, v, mode=self.mode, levels=c.levels, pooling=c.pooling,
                          topk=c.topk, scorer=c.scorer, layout="bnhd")
        return self.out(y.reshape(b, n, c.n_heads * hd))


class SwiGLU(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg, rotary):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, rotary)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ByteLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        rotary = Rotary(cfg.head_dim, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(cfg, rotary) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        """Normal(0, init_std) weights; the projections that write into the residual stream are
        scaled by 1/sqrt(2 n_layers) so the stream's variance does not grow with depth."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                nn.init.ones_(p)  # RMSNorm gains
            elif name.endswith(("attn.out.weight", "mlp.down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def set_attention_mode(self, mode):
        if mode not in ATTENTION_MODES:
            raise ValueError(f"attention mode must be one of {ATTENTION_MODES}, got {mode!r}")
        for blk in self.blocks:
            blk.attn.mode = mode

    @property
    def attention_mode(self):
        return self.blocks[0].attn.mode

    def forward(self, tokens):
        """tokens [B, N] int64 -> logits [B, N, vocab] (compute dtype under autocast)."""
        if self.attention_mode == "lighthouse":
            self.cfg.check_seq_len(tokens.shape[1])
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))

    def num_params(self):
        return sum(p.numel() for p in self.parameters())


def param_count(cfg):
    """Parameters of ByteLM(cfg), counted without allocating them."""
    with torch.device("meta"):
        return ByteLM(cfg).num_params()


def lm_loss(logits, targets):
    """Mean cross-entropy in fp32 over the targets that are not -100 (nats per byte)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100)
