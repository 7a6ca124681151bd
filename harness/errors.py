"""User-facing errors: one sentence naming the file, the key and the fix; never a traceback."""

from __future__ import annotations


class HarnessError(Exception):
    """An error a user can cause and fix. The CLI prints str(err) and exits with code 2."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None, fix: str | None = None):
        self.file, self.key, self.line, self.fix, self.bare = file, key, line, fix, message
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}"
            if self.line:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        text = f"{where}{key}{self.bare}"
        if self.fix:
            text = text.rstrip(".") + f"; {self.fix}"
        return text if text.endswith((".", "?", "!")) else text + "."


def did_you_mean(name: str, choices) -> str:
    """'did you mean X?' suffix from difflib, or the list of choices when nothing is close."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    # A short name the user spelled out ("rank" for "r") is no close match by edit distance.
    close = close or [c for c in choices if len(c) >= 1 and name.lower().startswith(c.lower())][:1]
    if close:
        return f"did you mean '{close[0]}'?"
    return "choose one of: " + ", ".join(choices)
