"""Paged KV cache of one replica: a pool of fixed-size blocks (``block_tokens`` tokens each).

Sequences hold whole blocks. ``allocate`` takes blocks for a sequence's tokens when it is admitted
(or a prefill chunk is scheduled), ``grow`` adds one block when decoding fills the last one,
``free`` returns all of a sequence's blocks on completion or preemption.

Invariants (checked by a hypothesis state machine): 0 <= used <= capacity; used equals the sum of
the blocks held by live sequences; nothing is allocated to a sequence twice or freed twice.
"""

from __future__ import annotations

import math


class KVCache:
    """Block accounting for one replica. Not thread-safe; O(1) per call."""

    __slots__ = ("block_tokens", "capacity_blocks", "held", "used_blocks")

    def __init__(self, capacity_blocks: int, block_tokens: int) -> None:
        if capacity_blocks < 0 or block_tokens < 1:
            raise ValueError("capacity_blocks must be >= 0 and block_tokens >= 1")
        self.capacity_blocks = capacity_blocks
        self.block_tokens = block_tokens
        self.used_blocks = 0
        self.held: dict[int, int] = {}

    @property
    def free_blocks(self) -> int:
        """Blocks not held by any sequence."""
        return self.capacity_blocks - self.used_blocks

    @property
    def occupancy_frac(self) -> float:
        """Fraction of the pool in use, in [0, 1]."""
        return self.used_blocks / self.capacity_blocks if self.capacity_blocks else 1.0

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold ``tokens`` tokens."""
        return math.ceil(tokens / self.block_tokens)

    def can_allocate(self, blocks: int) -> bool:
        """Whether ``blocks`` more blocks are free."""
        return blocks <= self.capacity_blocks - self.used_blocks

    def allocate(self, seq: int, blocks: int) -> bool:
        """Give ``seq`` ``blocks`` more blocks; False (and no change) when they are not free."""
        if blocks < 0:
            raise ValueError("blocks must be >= 0")
        if blocks > self.capacity_blocks - self.used_blocks:
            return False
        self.held[seq] = self.held.get(seq, 0) + blocks
        self.used_blocks += blocks
        return True

    def grow(self, seq: int) -> bool:
        """One more block for a live sequence; False when the pool is full."""
        if seq not in self.held:
            raise KeyError(f"sequence {seq} holds no blocks")
        return self.allocate(seq, 1)

    def free(self, seq: int) -> int:
        """Return all of ``seq``'s blocks to the pool; returns how many."""
        blocks = self.held.pop(seq)
        self.used_blocks -= blocks
        return blocks
