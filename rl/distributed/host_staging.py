"""Host copies of offloaded storages (rl/distributed/colocated.py), packed into a few chunks whose sizes are powers
of two, and the sizing rule the memory plan shares (rl/distributed/memory_plan.py).

PyTorch's pinned host allocator (CachingHostAllocator) rounds every allocation up to the next power of two and keeps
it: one pinned buffer per storage costs up to twice its bytes (1.6x over an X-Omni colocated worker's AdamW shards
and decoder), and one buffer for everything would round 39 GiB up to 64 GiB. So the storages are laid end to end,
each at an ALIGN boundary, in one byte range cut into chunks of CHUNK_BYTES; the tail, rounded up to
MIN_CHUNK_BYTES, is cut into the powers of two of its binary expansion. Every chunk is a power of two, so the
allocator adds nothing, and the chunks exceed the storages by less than MIN_CHUNK_BYTES plus ALIGN per storage: 1
MiB over the 39.6 GiB of an X-Omni colocated worker's 2,712 tensors (AdamW shards of 256 B to 32 MiB, decoder
tensors up to 251 MiB), where one buffer each pinned 62.8 GiB. A storage may straddle two chunks; it is copied piece
by piece. On the CPU the same chunks are plain (unpinned) memory.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate

import torch

ALIGN = 512
"""Offset granularity: the CUDA caching allocator's block size, so every copy runs between 512-aligned addresses on
both sides and any dtype's view of a slice is aligned."""
CHUNK_BYTES = 1 << 30
"""The largest chunk (1 GiB): a few dozen page-locking allocations per worker, none of them huge."""
MIN_CHUNK_BYTES = 1 << 20
"""The smallest chunk (1 MiB): the tail is rounded up to it, so at most 10 chunks are smaller than CHUNK_BYTES."""


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def packed_offsets(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Each storage's offset in the packed byte range (storages end to end, each at an ALIGN boundary), and the
    range's length."""
    offsets, end = [], 0
    for size in sizes:
        offsets.append(end)
        end = _aligned(end + size)
    return offsets, end


def chunk_sizes(nbytes: int) -> list[int]:
    """The chunks that hold a packed range of `nbytes`: CHUNK_BYTES each, then the tail (rounded up to
    MIN_CHUNK_BYTES) as descending powers of two. Their starts are multiples of MIN_CHUNK_BYTES, hence of ALIGN."""
    full, tail = divmod(nbytes, CHUNK_BYTES)
    tail = -(-tail // MIN_CHUNK_BYTES) * MIN_CHUNK_BYTES
    return [CHUNK_BYTES] * full + [1 << b for b in reversed(range(tail.bit_length())) if tail >> b & 1]


def packed_host_bytes(sizes: Sequence[int]) -> int:
    """Host bytes `HostStaging` allocates for storages of `sizes` bytes (what the OS pins on a GPU)."""
    return sum(chunk_sizes(packed_offsets(sizes)[1]))


def _as_bytes(storage: torch.UntypedStorage) -> torch.Tensor:
    """A uint8 tensor over the whole storage (slicing it slices the storage without a copy)."""
    return torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage, 0, (storage.nbytes(),), (1,))


class HostStaging:
    """Host copies of a list of storages in packed chunks, kept from one `stage` to the next while the chunk sizes
    stay the same (no allocation per phase switch). pin: page-locked chunks (a GPU's copies)."""

    def __init__(self, pin: bool = False):
        self.pin = pin
        self.chunks: list[torch.Tensor] = []  # uint8, one per chunk_sizes entry
        self._starts: list[int] = []  # each chunk's offset in the packed range
        self._offsets: list[int] = []  # each staged storage's offset in the packed range

    @property
    def nbytes(self) -> int:
        """Host bytes held (pinned on a GPU), staged or not."""
        return sum(chunk.numel() for chunk in self.chunks)

    def stage(self, storages: Sequence[torch.UntypedStorage]) -> None:
        """Copy the storages into the chunks (allocated anew only when their sizes change)."""
        sizes = [s.nbytes() for s in storages]
        self._offsets, end = packed_offsets(sizes)
        wanted = chunk_sizes(end)
        if [chunk.numel() for chunk in self.chunks] != wanted:
            self.chunks = []  # released before the new ones are allocated (the allocator may hand them back)
            self.chunks = [torch.empty(n, dtype=torch.uint8, pin_memory=self.pin) for n in wanted]
            self._starts = list(accumulate(wanted[:-1], initial=0))
        for storage, offset in zip(storages, self._offsets, strict=True):
            for host, device in self._pieces(_as_bytes(storage), offset):
                host.copy_(device)

    def unstage(self, storages: Sequence[torch.UntypedStorage]) -> None:
        """Copy the last `stage`'s contents back into the same storages (given their bytes back meanwhile), once:
        nothing is staged afterwards."""
        for storage, offset in zip(storages, self._offsets, strict=True):
            for host, device in self._pieces(_as_bytes(storage), offset):
                device.copy_(host)
        self._offsets = []

    def _pieces(self, flat: torch.Tensor, offset: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(chunk slice, storage slice) pairs covering the storage `flat` placed at `offset` in the packed range."""
        done, index = 0, bisect_right(self._starts, offset) - 1
        while done < flat.numel():
            start = offset + done - self._starts[index]
            take = min(flat.numel() - done, self.chunks[index].numel() - start)
            yield self.chunks[index][start:start + take], flat[done:done + take]
            done, index = done + take, index + 1
