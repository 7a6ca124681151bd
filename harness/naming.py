"""Display names of arms that the plan writes and the comparisons read back (one seed's copy)."""

from __future__ import annotations

import re

SEED_SUFFIX = re.compile(r" · seed -?\d+$")


def seed_name(name: str, seed: int) -> str:
    """The display name of one seed's copy of an arm (plan adds it, seed_summary strips it)."""
    return f"{name} · seed {seed}"


def base_name(name: str) -> str:
    return SEED_SUFFIX.sub("", name)
