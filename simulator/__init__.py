"""fleetsim: a capacity planner for LLM-inference GPU fleets.

The package is flat, one concept per module. Everything inside is SI (see ``simulator.units``).
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
