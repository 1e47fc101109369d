"""The Lighthouse semantics of docs/spec.md as a small numpy program (float64; k, v may have fewer heads: GQA).

`python3 tools/spec/model.py DIR` recomputes every configuration of DIR/manifest.json from its inputs and
compares indices, output and gradients with the stored ones (tests/golden/ was produced by the
published reference implementation). Exits 0 when every configuration matches (indices identical;
out, dq, dk, dv within 1e-5 relative, the tolerance of the vectors' README), 1 on any mismatch, and
77 (the skip status of ctest) when numpy is missing."""
import json, os, sys
try:
    import numpy as np
except ImportError:
    if __name__ == "__main__":
        print(f"skipped: {sys.executable} has no numpy (Debian: apt-get install python3-numpy)")
        sys.exit(77)
    raise

TOLERANCE = 1e-5   # relative Frobenius error of out, dq, dk, dv

def level_len(N, p, lv): return N // p**lv

def pyramid(x, L, p):                 # x [B,N,H,D] -> [B,H,S_total,D]
    B, N, H, D = x.shape
    lv = [x] + [x[:, :level_len(N, p, l) * p**l].reshape(B, level_len(N, p, l), p**l, H, D).mean(2) for l in range(1, L)]
    return np.concatenate(lv, 1).transpose(0, 2, 1, 3)

def scores(x, L, p):                  # l2 norm per token, max-pooled per level -> [B,H,S_total]
    B, N, H, D = x.shape
    s = np.sqrt((x.astype(np.float64) ** 2).sum(-1))           # [B,N,H]
    lv = [s] + [s[:, :level_len(N, p, l) * p**l].reshape(B, level_len(N, p, l), p**l, H).max(2) for l in range(1, L)]
    return np.concatenate(lv, 1).transpose(0, 2, 1)

def scores_dilated(q, k, v, L, p, dil):
    """Dilated scorer (docs/spec.md section 10): level-0 score of token t = L2 norm of the causal attention
    output at t over the dilated sequence {t' <= t : t' = t mod dil}; qk: q attends k, kq: k
    attends q, values v both ways (H == Hkv). Upper levels max-pool as for the norm scorer."""
    B, N, H, D = q.shape
    s_qk, s_kq = np.zeros((B, N, H)), np.zeros((B, N, H))
    for b in range(B):
        for h in range(H):
            for di in range(dil):
                t = np.arange(di, N, dil)
                Q, K, V = (x[b, t, h].astype(np.float64) for x in (q, k, v))
                s_qk[b, t, h] = np.linalg.norm(attention(Q, K, V)[0], axis=-1)
                s_kq[b, t, h] = np.linalg.norm(attention(K, Q, V)[0], axis=-1)
    def pyr(s):
        lv = [s] + [s[:, :level_len(N, p, l) * p**l].reshape(B, level_len(N, p, l), p**l, H).max(2) for l in range(1, L)]
        return np.concatenate(lv, 1).transpose(0, 2, 1)
    return pyr(s_qk), pyr(s_kq)

def select(sqk, skq, N, L, p, topk):  # one (b,h): scores over the concatenated pyramid -> sorted positions
    T = topk // 128
    off = [sum(level_len(N, p, j) for j in range(l)) for l in range(L)]
    chunk = level_len(N, p, L - 1) // T
    keys = []
    for t in range(T):
        cand = list(range(t * chunk, (t + 1) * chunk))
        for lv in range(L - 1, -1, -1):
            f = p ** lv
            if lv == 0:
                keys += [((i * f) << 16, off[lv] + i) for i in cand]
                break
            # candidates are in position order; stable sorts break ties toward the lower position
            by_qk = sorted(cand, key=lambda i: -sqk[off[lv] + i])
            A = by_qk[:64]
            rest = sorted(by_qk[64:])
            Bk = sorted(rest, key=lambda i: -skq[off[lv] + i])[:64]
            sel = set(A) | set(Bk)
            for i in cand:
                if i in sel:   # refined: after its own children, before the next span
                    keys.append(((((i + 1) * f) << 16) - (1 << (16 - lv)), off[lv] + i))
                else:          # kept coarse, ordered by the start of its span
                    keys.append(((i * f) << 16, off[lv] + i))
            cand = sorted(c * p + j for c in A + Bk for j in range(p))
    keys.sort()
    return np.array([k[1] for k in keys])

def attention(q, k, v):               # causal softmax attention, q/k/v [S,D]
    S, D = q.shape
    a = q @ k.T / np.sqrt(D)
    a = np.where(np.tril(np.ones((S, S), bool)), a, -np.inf)
    a = np.exp(a - a.max(1, keepdims=True)); P = a / a.sum(1, keepdims=True)
    return P @ v, P

def fan(idx, N, L, p):                # pyramid position -> (first output position, fan-out)
    off = 0
    for lv in range(L):
        n = level_len(N, p, lv)
        if idx < off + n:
            f = p ** lv
            return (idx - off) * f + f - 1, f
        off += n

def forward_backward(q, k, v, dout, L, p, topk, dilation=0):
    B, N, H, D = q.shape
    G = H // k.shape[2]                # query heads per kv head
    qc, kc, vc = (pyramid(x.astype(np.float64), L, p) for x in (q, k, v))
    if dilation:
        sqk, skq = scores_dilated(q, k, v, L, p, dilation)
    else:
        sqk, skq = scores(q, L, p), scores(k, L, p)
    out = np.zeros((B, H, N, D)); dq = np.zeros_like(qc); dk = np.zeros_like(kc); dv = np.zeros_like(vc)
    all_idx = []
    for b in range(B):
        for h in range(H):
            hk = h // G
            idx = select(sqk[b, h], skq[b, hk], N, L, p, topk); all_idx.append(idx)
            Q, K, V = qc[b, h, idx], kc[b, hk, idx], vc[b, hk, idx]
            O, P = attention(Q, K, V)
            dO = np.zeros_like(O)
            for s, i in enumerate(idx):
                start, f = fan(i, N, L, p)
                out[b, h, start:start + f] += O[s]
                dO[s] = dout[b, h, start:start + f].sum(0)
            dV = P.T @ dO; dP = dO @ V.T
            dS = P * (dP - (dP * P).sum(1, keepdims=True)) / np.sqrt(D)
            dq[b, h, idx] += dS @ K; dk[b, hk, idx] += dS.T @ Q; dv[b, hk, idx] += dV
    def unpool(g):                    # [B,H,S_total,D] -> [B,N,H,D]
        r = g[:, :, :N].copy(); off = N
        for lv in range(1, L):
            n, f = level_len(N, p, lv), p ** lv
            r[:, :, :n * f] += np.repeat(g[:, :, off:off + n], f, axis=2) / f; off += n
        return r.transpose(0, 2, 1, 3)
    return np.array(all_idx).reshape(B, H, -1), out, unpool(dq), unpool(dk), unpool(dv)

def check(d):
    """Recomputes every configuration of d/manifest.json; returns the number that do not match."""
    bad = 0
    for c in json.load(open(os.path.join(d, "manifest.json"))):
        ld = lambda k: np.fromfile(os.path.join(d, c["files"][k]["file"]), np.int32 if k == "indices" else np.float32).reshape(c["files"][k]["shape"])
        idx, out, dq, dk, dv = forward_backward(ld("q"), ld("k"), ld("v"), ld("dout"), c["levels"], c["pooling"], c["topk"],
                                                c.get("dilation", 0))
        ref_idx = ld("indices").reshape(idx.shape)
        rel = {name: float(np.linalg.norm(got - ld(name)) / np.linalg.norm(ld(name)))
               for name, got in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv))}
        ok = np.array_equal(idx, ref_idx) and all(r <= TOLERANCE for r in rel.values())
        bad += not ok
        print(c["name"], "indices equal:", np.array_equal(idx, ref_idx), "mismatches:", int((idx != ref_idx).sum()),
              " ".join(f"{name} rel: {r:.2e}" for name, r in rel.items()), "ok" if ok else "MISMATCH")
    return bad

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: model.py DIR   (a folder of vectors with manifest.json, e.g. tests/golden)")
    bad = check(sys.argv[1])
    print(f"{sys.argv[1]}: {'all configurations match' if not bad else f'{bad} configuration(s) do not match'}")
    sys.exit(1 if bad else 0)
