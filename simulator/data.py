"""Where the shipped data lives: hardware profiles, model catalog, MLPerf results, scenarios.

The data directories sit at the top of the source tree (``hardware_profiles/``, ``scenarios/``) and
are installed as package data (``simulator._profiles``, ``simulator._scenarios``), so the installed
tool works from any directory. In a source checkout the top-level folders are used directly.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=8)
def _locate(package: str, top_level: str) -> Path:
    """The folder of ``package`` if installed, else ``top_level`` of the source tree (looked up once: the
    efficiency and profile loaders ask on every call)."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location)
            if path.is_dir():
                return path
    return _REPO_ROOT / top_level


def profiles_dir() -> Path:
    """The ``hardware_profiles/`` folder (accelerators, models, efficiency, MLPerf data)."""
    return _locate("simulator._profiles", "hardware_profiles")


def scenarios_dir() -> Path:
    """The ``scenarios/`` folder of ready-to-run scenario files."""
    return _locate("simulator._scenarios", "scenarios")
