"""User-facing errors: one sentence naming the file, the key and the fix; never a traceback."""

from __future__ import annotations

import logging
import re

# C0/C1 control characters (clear-screen, colour, window title, backspace...) and the bidi
# overrides that reorder what a terminal shows: text from files never reaches a terminal raw.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


# Sentences for the user's console from inside an arm process (an arm starting again from step 0):
# the arm process forwards them to the runner as events (harness.execution.arm_process).
notices = logging.getLogger("harness.notice")


def printable(text) -> str:
    """str(text) with every control character shown as an escape (\\x1b), so it prints as the
    characters it is, on one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1] if m.group() not in "\n\t" else " ", str(text))


def safe(text) -> str:
    """User-controlled text (a name, a path, an error) to put inside a rich markup string: printable,
    and with [brackets] escaped so rich prints them instead of reading them as markup."""
    from rich.markup import escape

    return escape(printable(text))


class HarnessError(Exception):
    """An error a user can cause and fix. The CLI prints str(err) and exits with code 2."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        fix: str | None = None,
    ):
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
        text = printable(text)
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
