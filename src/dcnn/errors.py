"""User-facing errors.

A :class:`DcnnError` is a problem with the user's input (an unknown model name, a corrupt file, an
invalid option). The CLI prints its message on one line and exits non-zero, without a traceback.
Its message names the problem and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DcnnError(Exception):
    """An error caused by the user's input; the message says what is wrong and how to fix it."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix listing close matches of `name` among `choices` (or '')."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
