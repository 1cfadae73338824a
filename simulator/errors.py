"""Errors that the CLI turns into one-line messages and exit codes.

``InputError`` (exit 2): the user gave something invalid (unknown name, malformed file, value out of
range, impossible layout). ``NoFeasibleAnswer`` (exit 1): the question is valid but has no answer.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(ValueError):
    """Bad input: the message is one line naming the problem and, where they exist, the valid choices."""


class NoFeasibleAnswer(RuntimeError):
    """A valid question with no feasible answer; the message says why."""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> InputError:
    """Build the error for an unknown name, suggesting the closest valid choices."""
    valid = sorted(choices)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return InputError(f"unknown {kind} '{name}'{hint}; valid choices: {', '.join(valid)}")
