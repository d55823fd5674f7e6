"""The tool's one user-facing error type.

Anything a user can get wrong (a config key, a data file, a model id, a run folder)
raises `LtuneError` with a one-line message that names the file/line/key and the fix.
The CLI prints it without a traceback and exits with code 2 (`--debug` shows the trace).
"""

from __future__ import annotations


class LtuneError(Exception):
    """A user-facing error: one line, naming the culprit and the fix."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


def suggest(name: str, candidates) -> str:
    """' Did you mean X?' for the nearest candidate, or '' when none is close."""
    import difflib

    cands = sorted(set(map(str, candidates)))
    close = difflib.get_close_matches(str(name), cands, n=1, cutoff=0.5)
    if close:
        return f" Did you mean '{close[0]}'?"
    if cands and len(cands) <= 20:
        return f" Valid: {', '.join(cands)}."
    return ""
