"""Ring: context parallelism, one sequence over several ranks (docs/context-parallel.md).

A plan bound to rank r of a ring of W ranks takes SEQ_LEN = the whole sequence and its q, k, v,
out and gradients are this rank's shard of N/W tokens: chunk r, then chunk 2W-1-r. Every rank
calls forward/backward with a plan of the same configuration at the same time."""
import ctypes

from . import _capi
from ._handle import Handle, null
from ._loader import function
from .errors import check


class Ring(Handle):
    """lh_ring. `Ring.local(world)`: ranks in this process, each rank's plan run from its own
    thread. `Ring.nccl_from_id(context, unique_id, rank, world)`: over an NCCL communicator the
    library makes (collective: every rank calls it at once). `Ring.nccl(context, comm)`: on the
    caller's ncclComm_t (an address).

    `rank` is this process's rank for NCCL rings and None for local rings (each plan names its
    rank). Plans bound to a ring keep it alive."""

    _kind = "Ring"

    def __init__(self, handle, world, rank=None, context=None):
        self._handle = handle
        self._destroy = function("lh_ring_destroy")
        self.world = world
        self.rank = rank
        self.context = context  # an NCCL ring keeps its context alive

    @classmethod
    def local(cls, world):
        handle = null(_capi.lh_ring)
        check(function("lh_ring_create_local")(int(world), ctypes.byref(handle)))
        return cls(handle, int(world))

    @classmethod
    def nccl_from_id(cls, context, unique_id, rank, world):
        unique_id = bytes(unique_id)
        if len(unique_id) != 128:
            raise ValueError(f"an NCCL unique id has 128 bytes, got {len(unique_id)}")
        handle = null(_capi.lh_ring)
        check(function("lh_ring_create_nccl_from_id")(context.handle, unique_id, int(rank), int(world),
                                                       ctypes.byref(handle)))
        return cls(handle, int(world), int(rank), context)

    @classmethod
    def nccl(cls, context, nccl_comm, rank=None, world=None):
        """On an existing ncclComm_t (its address); rank/world are recorded for convenience (the
        library takes them from the communicator)."""
        handle = null(_capi.lh_ring)
        check(function("lh_ring_create_nccl")(context.handle, ctypes.c_void_p(int(nccl_comm)), ctypes.byref(handle)))
        return cls(handle, world, rank, context)

    def close(self):
        """Destroys the ring now (plans bound to it must be closed first)."""
        super().close()
        self.context = None

    def __repr__(self):
        kind = "local" if self.context is None else "nccl"
        closed = "" if self._handle else " closed"
        return f"<lighthouse.Ring {kind}{closed} world={self.world}{'' if self.rank is None else f' rank={self.rank}'}>"
