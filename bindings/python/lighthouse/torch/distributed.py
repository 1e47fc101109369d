"""Context parallelism for the PyTorch layer: one sequence over several ranks.

Each rank calls lighthouse.torch.attention(q, k, v, ring=rank_handle, ...) on its shard of the
sequence, at the same time as the other ranks (a collective: every rank must make the call).
With W ranks the sequence is cut into 2W chunks and rank r holds chunks r and 2W-1-r
(shard_sequence / unshard_sequence do that cut); docs/context-parallel.md has the semantics.

- nccl_ring(group): one RingRank per process over NCCL, for a torch.distributed process group:
  the NCCL unique id comes from lh_nccl_get_unique_id on the group's first rank and is broadcast
  through the group, then every rank joins the library's communicator.
- local_ring(world, device): W RingRanks in this process (e.g. on one GPU), each used from its
  own thread.
"""
import itertools
import threading

import torch

from ..ring import Ring
from . import _plans

_registry = {}
_ids = itertools.count(1)
_lock = threading.Lock()


class RingRank:
    """Rank `rank` of a ring of `world` ranks, on `device`: what attention(..., ring=) takes.
    The custom op names it by `id` (an int), so a compiled graph carries no Python object."""

    def __init__(self, ring, rank, world, device):
        self.ring = ring
        self.rank = int(rank)
        self.world = int(world)
        self.device = torch.device(device)
        self.context = ring.context if ring.context is not None else _plans.context(self.device)
        with _lock:
            self.id = next(_ids)
            _registry[self.id] = self

    @property
    def is_local(self):
        """A rank of an in-process ring (which allows one live plan per rank)."""
        return self.ring.context is None

    def close(self):
        """Forgets this rank's plans and the handle (the ring is destroyed with its last user)."""
        with _lock:
            _registry.pop(self.id, None)
        _plans.drop_plans(self.id)

    def __repr__(self):
        return f"<lighthouse.torch.RingRank {self.rank}/{self.world} on {self.device} ({self.ring!r})>"


def ring_by_id(ring_id):
    """The RingRank of an op's `ring` argument (0: none)."""
    if ring_id == 0:
        return None
    found = _registry.get(ring_id)
    if found is None:
        raise ValueError(f"ring {ring_id} is not an open lighthouse.torch.RingRank (closed?)")
    return found


def local_ring(world, device=None):
    """W ranks of one in-process ring on `device` (default: the current CUDA device, else the CPU);
    run rank r's calls from its own thread (and, on CUDA, its own stream)."""
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    ring = Ring.local(world)
    return [RingRank(ring, r, world, device) for r in range(world)]


def nccl_ring(group=None, device=None):
    """This process's RingRank of an NCCL ring over the ranks of `group` (default: the world
    group). Collective: every rank of the group calls it at the same time. `device` defaults to
    the current CUDA device."""
    import torch.distributed as dist
    if not dist.is_initialized():
        raise RuntimeError("lighthouse.torch.nccl_ring needs torch.distributed.init_process_group first")
    group = group if group is not None else dist.group.WORLD
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    ctx = _plans.context(device)
    unique_id = broadcast_from_first(ctx.nccl_unique_id, group, device)
    ring = Ring.nccl_from_id(ctx, unique_id, rank, world)
    return RingRank(ring, rank, world, device)


def broadcast_from_first(make, group, device):
    """make() on the group's first rank, its result on every rank. If make() raises there, every
    rank raises that exception (instead of the others waiting for a value that never comes)."""
    import torch.distributed as dist
    group = group if group is not None else dist.group.WORLD
    box = [None]
    if dist.get_rank(group) == 0:
        try:
            box[0] = ("value", make())
        except Exception as e:  # sent to the other ranks, then raised here too
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group,
                               device=device if dist.get_backend(group) == "nccl" else None)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def _seq_dim(layout):
    if layout not in _plans.LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {_plans.LAYOUTS}")
    return 1 if layout == "bnhd" else 2


def shard_sequence(x, rank, world, layout="bnhd"):
    """Rank `rank`'s shard of a whole-sequence tensor: chunks rank and 2*world-1-rank of 2*world
    (contiguous)."""
    chunks = x.chunk(2 * world, dim=_seq_dim(layout))
    if len(chunks) != 2 * world or any(c.shape != chunks[0].shape for c in chunks):
        raise ValueError(f"the sequence ({x.shape[_seq_dim(layout)]}) must split into {2 * world} equal chunks")
    return torch.cat([chunks[rank], chunks[2 * world - 1 - rank]], dim=_seq_dim(layout)).contiguous()


def unshard_sequence(shards, layout="bnhd"):
    """The whole-sequence tensor from every rank's shard (in rank order): the inverse of
    shard_sequence."""
    world = len(shards)
    dim = _seq_dim(layout)
    halves = [s.chunk(2, dim=dim) for s in shards]
    return torch.cat([halves[r][0] for r in range(world)] + [halves[r][1] for r in reversed(range(world))], dim=dim)
