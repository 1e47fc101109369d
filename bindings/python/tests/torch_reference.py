"""Lighthouse attention in plain PyTorch (docs/spec.md), for the tests: mean pooling into the
pyramid, torch.gather of the library's selected indices, F.scaled_dot_product_attention on the
sub-sequence, and scatter_add back to full length; autograd gives the backward. Everything is
computed in float32 from the given tensors (upcast), in [B, N, H, D]."""
import torch
import torch.nn.functional as F


def level_lengths(n, levels, pooling):
    return [n // pooling ** lv for lv in range(levels)]


def pyramid(x, levels, pooling):
    """[B, N, H, D] -> [B, H, S_total, D]: level 0, then the means over windows of pooling**l."""
    b, n, h, d = x.shape
    lv = [x] + [x.reshape(b, n // pooling ** l, pooling ** l, h, d).mean(2) for l in range(1, levels)]
    return torch.cat(lv, 1).transpose(1, 2)


def lighthouse(q, k, v, indices, levels, pooling, softmax_scale=None):
    """out [B, N, H, D] (float32) of Lighthouse attention with the given selection
    (indices [B, H, S_sel], pyramid positions in sub-sequence order)."""
    q, k, v = (x.float() for x in (q, k, v))
    b, n, h, d = q.shape
    group = h // k.shape[2]
    qc, kc, vc = (pyramid(x, levels, pooling) for x in (q, k, v))
    kc, vc = kc.repeat_interleave(group, dim=1), vc.repeat_interleave(group, dim=1)
    idx = indices.long()
    take = idx[..., None].expand(-1, -1, -1, d)
    o = F.scaled_dot_product_attention(qc.gather(2, take), kc.gather(2, take), vc.gather(2, take),
                                       is_causal=True, scale=softmax_scale)
    return scatter(o, idx, n, levels, pooling).transpose(1, 2)


def dilated_scores(q, k, v, levels, pooling, dilation):
    """The dilated scorer (docs/spec.md section 10) as the reference builds it: [B, N, H, D]
    viewed as [B, N/d, d*H, D], causal SDPA with queries q / keys k and with queries k / keys q,
    per-token norms, max-pooled per level: (scores_q, scores_k) [B, H, S_total] float32."""
    q, k, v = (x.float() for x in (q, k, v))
    b, n, h, d = q.shape

    def norms(x, y):
        view = [t.reshape(b, n // dilation, dilation * h, d).transpose(1, 2) for t in (x, y, v)]
        o = F.scaled_dot_product_attention(*view, is_causal=True, scale=d ** -0.5)
        s = o.transpose(1, 2).reshape(b, n, h, d).norm(dim=-1).transpose(1, 2)  # [B, H, N]
        lv = [s] + [s.reshape(b, h, n // pooling ** l, pooling ** l).amax(-1) for l in range(1, levels)]
        return torch.cat(lv, -1)

    return norms(q, k), norms(k, q)


def scatter(o, idx, n, levels, pooling):
    """o [B, H, S_sel, D] of entries at pyramid positions idx -> [B, H, N, D]: entry (l, i) is
    added to tokens i*f + f-1 + c, c < f = pooling**l, t < N (its window shifted right by f-1)."""
    out = o.new_zeros(o.shape[0], o.shape[1], n, o.shape[3])
    offset = 0
    for lv, length in enumerate(level_lengths(n, levels, pooling)):
        f = pooling ** lv
        on_level = (idx >= offset) & (idx < offset + length)
        first = (idx - offset) * f + f - 1
        for c in range(f):
            t = first + c
            keep = on_level & (t < n)
            contribution = o * keep[..., None].to(o.dtype)
            out = out.scatter_add(2, t.clamp(0, n - 1)[..., None].expand_as(o), contribution)
        offset += length
    return out


def dense(q, k, v, softmax_scale=None):
    """Causal SDPA of [B, N, H, D] tensors (k/v may have fewer heads), float32."""
    q, k, v = (x.float().transpose(1, 2) for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=softmax_scale).transpose(1, 2)


def lighthouse_ring(q, k, v, chunk_indices, levels, pooling, softmax_scale=None):
    """Context-parallel Lighthouse (docs/spec.md section 8) over the whole sequence [B, N, H, D]
    cut into len(chunk_indices) equal chunks: each chunk's selection (its own indices, positions
    of the chunk's own pyramid) is gathered, the chunks' sub-sequences in chunk order form one
    causal sub-sequence, and each chunk's output is scattered back within the chunk."""
    q, k, v = (x.float() for x in (q, k, v))
    b, n, h, d = q.shape
    parts = len(chunk_indices)
    group = h // k.shape[2]
    gathered, lengths = [[], [], []], []
    for c, idx in enumerate(chunk_indices):
        idx = idx.long()
        take = idx[..., None].expand(-1, -1, -1, d)
        for slot, x in enumerate((q, k, v)):
            p = pyramid(x.chunk(parts, dim=1)[c], levels, pooling)
            if slot:
                p = p.repeat_interleave(group, dim=1)
            gathered[slot].append(p.gather(2, take))
        lengths.append(idx.shape[-1])
    o = F.scaled_dot_product_attention(*(torch.cat(g, 2) for g in gathered), is_causal=True, scale=softmax_scale)
    outs = [scatter(oc, idx.long(), n // parts, levels, pooling)
            for oc, idx in zip(o.split(lengths, dim=2), chunk_indices)]
    return torch.cat(outs, 2).transpose(1, 2)


def to_bnhd(x, layout):
    return x if layout == "bnhd" else x.transpose(1, 2)


def from_bnhd(x, layout):
    return x if layout == "bnhd" else x.transpose(1, 2)


def rel_max(got, want):
    """max |got - want| / max |want| (float64, on the CPU: a GPU result may be checked against a
    CPU one), the bound the C tests use."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / (scale if scale > 0 else 1.0)
