"""The one exception type a user can cause, and the "did you mean" helper behind its messages."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class TransferscaleError(Exception):
    """Raised for anything the user can fix: a bad spec, unknown name, too few examples, degenerate input.

    The message always says what to change. The CLI prints it without a traceback.
    """


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint naming the closest valid choices, or listing them all when none is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "valid: " + ", ".join(repr(c) for c in choices)


def unknown(kind: str, name: str, choices: Iterable[str]) -> TransferscaleError:
    """Build the error for an unknown registered name."""
    return TransferscaleError(f"unknown {kind} {name!r}; {did_you_mean(name, choices)}")
