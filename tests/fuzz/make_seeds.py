#!/usr/bin/env python3
"""Writes the seed inputs of the C ABI fuzz target into tests/fuzz/corpus/.

Each seed is a little program in the format of fuzz_ops.c: an opcode byte, a slot byte, then the
operation's arguments. The seeds walk the paths a fuzzer would take long to find by chance:
valid Lighthouse and dense plans run end to end, every stage entry point, a ring of one rank, a
ring of two that times out, hooks of every kind, foreign `saved` buffers, non-finite inputs,
sizes past the 32-bit limits, and NULL, misaligned and stream arguments.

    python3 tests/fuzz/make_seeds.py        (rewrites the seed-* files; other corpus files stay)
"""
import os

CREATE, DESTROY, SET_I64, SET_F64, FINALIZE, FORWARD, BACKWARD, STAGE, ATTENTION, HOOKS, RING, \
    CONTEXT, MISC, QUERY = range(14)
BATCH, SEQ_LEN, HEADS, KV_HEADS, HEAD_DIM, DTYPE, LAYOUT, LEVELS, POOLING, TOPK, MODE = range(11)

SMALL = [1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 6, 12, 96, 384, 768, 3072]
EDGE = [0, -1, -128, 127, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**40, 2**40 + 1, 2**62,
        2**63 - 1, -2**63]


def value(v):
    """fz_value_i64's encoding of v."""
    if v in SMALL:
        return bytes([SMALL.index(v)])
    if v in EDGE:
        i = EDGE.index(v)
        return bytes([next(c for c in range(200, 230) if c % len(EDGE) == i)])
    if 0 <= v < 65536:
        return bytes([160, v & 0xff, v >> 8])
    return bytes([230]) + (v & (2**64 - 1)).to_bytes(8, 'little')


def op(code, slot=0, *args):
    return bytes([code, slot]) + b''.join(a if isinstance(a, bytes) else bytes([a]) for a in args)


def set_i64(slot, key, v):
    return op(SET_I64, slot, key + 1, value(v))


def plan(slot, **p):
    names = {'batch': BATCH, 'n': SEQ_LEN, 'h': HEADS, 'hkv': KV_HEADS, 'd': HEAD_DIM,
             'layout': LAYOUT, 'levels': LEVELS, 'pooling': POOLING, 'topk': TOPK, 'mode': MODE}
    out = op(CREATE, slot, 0)
    for k, v in p.items():
        out += set_i64(slot, names[k], v)
    return out


def flags(f=0, w=0):
    return bytes([f, w])


def context(option, v, text=b'/tmp/x?'):
    """lh_context_set_i64 of option (0 = NUM_THREADS, ...), then lh_context_set_str with the
    7 bytes of text when v is odd, else NULL."""
    return op(CONTEXT, 0, option + 1, value(v)) + text


LH = dict(n=256, h=2, d=8, levels=2, pooling=2, topk=128)
SEEDS = {
    'lighthouse-run': plan(0, **LH) + op(FINALIZE, 0) + op(FORWARD, 0, flags()) +
    op(BACKWARD, 0, 0, flags()) + op(QUERY, 0, 0, 3),
    'stages': plan(0, **LH) + op(FINALIZE, 0) + op(STAGE, 0, 0, 0, flags()) +
    op(STAGE, 0, 1, 0, flags()) + op(STAGE, 0, 2, 0, flags()) + op(STAGE, 0, 3, 0, flags()) +
    op(STAGE, 0, 2, 1, flags()) + op(STAGE, 0, 3, 2, flags()),
    'attention-step': plan(0, **LH) + op(FINALIZE, 0) + op(ATTENTION, 0, 0, flags()) +
    op(ATTENTION, 0, 1, flags()),
    'dense-gqa': plan(0, n=128, h=4, hkv=2, d=16, mode=1, layout=1) + op(FINALIZE, 0) +
    op(FORWARD, 0, flags()) + op(BACKWARD, 0, 0, flags()),
    'ring-of-one': plan(0, n=512, h=2, d=8, levels=2, pooling=2, topk=256) +
    op(RING, 0, 0, 1) + op(FINALIZE, 0) + op(FORWARD, 0, flags()) + op(BACKWARD, 0, 0, flags()) +
    op(ATTENTION, 0, 0, flags()) + op(RING, 0, 2, 0) + op(DESTROY, 0),
    'ring-of-two-alone': plan(0, n=256, h=2, d=8, mode=1) + op(RING, 0, 1, 1) +
    op(FINALIZE, 0) + op(FORWARD, 0, flags()) + op(FORWARD, 0, flags()),
    'hooks': plan(0, **LH) + op(HOOKS, 0, 1) + op(FINALIZE, 0) + op(FORWARD, 0, flags()) +
    op(BACKWARD, 0, 0, flags()) + plan(1, **LH) + op(HOOKS, 1, 3) + op(FINALIZE, 1) +
    op(FORWARD, 1, flags()) + op(BACKWARD, 1, 0, flags()) + plan(2, **LH) + op(HOOKS, 2, 2) +
    op(FINALIZE, 2) + op(FORWARD, 2, flags()) + op(HOOKS, 2, 4),
    'foreign-saved': plan(0, n=512, h=2, d=8, levels=3, pooling=2, topk=128) + op(FINALIZE, 0) +
    plan(1, n=512, h=2, d=8, levels=2, pooling=4, topk=128) + op(FINALIZE, 1) +
    op(FORWARD, 0, flags()) + op(FORWARD, 1, flags()) + op(BACKWARD, 0, 3, flags()) +
    op(BACKWARD, 0, 1, flags()) + op(BACKWARD, 0, 2, flags()) + op(BACKWARD, 0, 0, flags()),
    'non-finite': plan(0, **LH) + op(FINALIZE, 0) + op(FORWARD, 0, flags(0x10)) +
    op(BACKWARD, 0, 0, flags(0x10)) + op(STAGE, 0, 1, 0, flags(0x10)) +
    op(FORWARD, 0, flags(0x30)) + op(SET_F64, 1, 1, 3) +
    plan(1, n=128, h=1, d=128, mode=1) + op(SET_F64, 1, 1, 3) + op(FINALIZE, 1) +
    op(FORWARD, 1, flags()) + op(BACKWARD, 1, 0, flags()),
    'limits': plan(0, n=2**31, h=1, d=1, levels=5, pooling=64, topk=128) + op(FINALIZE, 0) +
    plan(1, n=2**40, h=1, d=1, mode=1) + op(FINALIZE, 1) + op(QUERY, 1, 0, 2) +
    set_i64(2, SEQ_LEN, -1) + set_i64(0, TOPK, 2**63 - 1) + op(SET_F64, 0, 1, 7),
    'bad-arguments': plan(0, **LH) + op(FINALIZE, 0) + op(FORWARD, 0, flags(1, 4)) +
    op(FORWARD, 0, flags(4, 3 << 3)) + op(FORWARD, 0, flags(8)) + op(FORWARD, 0, flags()) +
    op(BACKWARD, 0, 0, flags(1, 9)) + op(STAGE, 0, 2, 1, flags(4, 4 << 3)),
    'context-and-misc': context(0, 2) + context(-1, 5000) + context(2, 1) + context(0, 4097) +
    op(MISC, 0, 0, value(2**31)) +
    op(MISC, 0, 1, value(-1)) + op(MISC, 0, 2, value(65)) + op(MISC, 0, 2, value(3)) +
    plan(0, **LH) + op(MISC, 0, 3, value(0)) + op(QUERY, 0, 3, 1),
}

if __name__ == '__main__':
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, 'seed-' + name), 'wb') as f:
            f.write(data)
    print(f'{len(SEEDS)} seeds in {out}')
