"""The one check every loader of weights runs before it copies a tensor: the file's names are the model's names.

PyTorch's `load_state_dict(strict=False)` and diffusers' `from_pretrained` leave a parameter the file lacks at its
random initialisation and only log it, so a checkpoint of another architecture (X-Omni-Zh's decoder in the En
class) would load and then produce noise. Every `from_pretrained` of the project compares names first and stops.
"""

from __future__ import annotations

from collections.abc import Iterable

PREVIEW = 5  # names shown per list: enough to recognise the architecture, short enough to read


def check_weight_names(expected: Iterable[str], found: Iterable[str], where: str) -> None:
    """ValueError unless `found` (the names in the file `where`) equals `expected` (the model's state-dict names).

    The message counts the missing and the unexpected names and shows the first few of each, sorted.
    """
    expected, found = set(expected), set(found)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise ValueError(f"weights in {where} do not match the model: missing {_preview(missing)}; "
                         f"unexpected {_preview(unexpected)}")


def _preview(names: list[str]) -> str:
    """'none', or 'N [a, b, ... and M more]'."""
    if not names:
        return "none"
    more = f" and {len(names) - PREVIEW} more" if len(names) > PREVIEW else ""
    return f"{len(names)} [{', '.join(names[:PREVIEW])}{more}]"
