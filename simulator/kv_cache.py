"""Paged KV cache of one replica: a pool of fixed-size blocks (``block_tokens`` tokens each).

The pool only counts blocks; which sequence holds how many is known to the engine (a decoding
sequence of ``n`` cached tokens holds ``ceil(n / block_tokens)`` blocks plus a fixed allowance for
sliding-window layers), so growth of a whole batch is one addition per step.

Invariant (checked by property tests): 0 <= used_blocks <= capacity_blocks; ``allocate`` never
over-commits and ``free`` never returns more than is in use.
"""

from __future__ import annotations

import math


class KVCache:
    """Block pool of one replica. O(1) per call."""

    __slots__ = ("block_tokens", "capacity_blocks", "used_blocks")

    def __init__(self, capacity_blocks: int, block_tokens: int) -> None:
        if capacity_blocks < 0 or block_tokens < 1:
            raise ValueError("capacity_blocks must be >= 0 and block_tokens >= 1")
        self.capacity_blocks = capacity_blocks
        self.block_tokens = block_tokens
        self.used_blocks = 0

    @property
    def free_blocks(self) -> int:
        """Blocks not in use."""
        return self.capacity_blocks - self.used_blocks

    @property
    def occupancy_frac(self) -> float:
        """Fraction of the pool in use, in [0, 1]."""
        return self.used_blocks / self.capacity_blocks if self.capacity_blocks else 1.0

    def blocks_for(self, tokens: int) -> int:
        """Blocks needed to hold ``tokens`` tokens."""
        return math.ceil(tokens / self.block_tokens)

    def allocate(self, blocks: int) -> bool:
        """Take ``blocks`` blocks; False (and no change) when they are not free."""
        if blocks < 0:
            raise ValueError("blocks must be >= 0")
        if blocks > self.capacity_blocks - self.used_blocks:
            return False
        self.used_blocks += blocks
        return True

    def free(self, blocks: int) -> None:
        """Return ``blocks`` blocks to the pool."""
        if blocks < 0 or blocks > self.used_blocks:
            raise ValueError(f"cannot free {blocks} blocks with {self.used_blocks} in use")
        self.used_blocks -= blocks
