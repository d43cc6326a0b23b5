"""Names that come from users and inputs and reach paths, SQL and pictures: checked where they
enter, so that no later use needs to escape them.

A dataset name becomes a folder (``models/<kind>/<dataset>/``, ``raw/<dataset>/``), a Delta
partition value and a SQL literal; a database name becomes a SQL identifier.
"""
from __future__ import annotations

import re

from insarlake.errors import InputError

DATASET_MAX_CHARS = 64
# letters, digits, '_', '-', '.', starting with a letter or digit (so never '.', '..' or hidden)
_DATASET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def dataset_problem(name: object) -> str | None:
    """Why ``name`` is not a valid dataset name, or None when it is."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > DATASET_MAX_CHARS:
        return f"is longer than {DATASET_MAX_CHARS} characters"
    if not _DATASET.fullmatch(name):
        return ("may hold only letters, digits, '_', '-' and '.', and must start with a letter or "
                "digit")
    return None


def check_dataset(name: object, where: str = "dataset") -> str:
    """``name`` if it is a valid dataset name, else InputError: '<where>: dataset name ... <why>'."""
    problem = dataset_problem(name)
    if problem:
        raise InputError(f"{where}: dataset name {_shown(name)} {problem}")
    return name


def dataset_from(text: str, default: str = "dataset") -> str:
    """A valid dataset name made from ``text`` (e.g. an input file name): every other character
    becomes '_', leading '.', '_' and '-' are dropped, at most DATASET_MAX_CHARS; ``default``
    when nothing is left."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip("._-")[:DATASET_MAX_CHARS]
    return name if name and dataset_problem(name) is None else default


def identifier_problem(name: object) -> str | None:
    """Why ``name`` is not a plain SQL identifier (letters, digits, '_', not starting with a
    digit), or None."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or len(name) > 128:
        return "must be a SQL identifier (letters, digits and '_', not starting with a digit, at most 128)"
    return None


def _shown(name: object) -> str:
    """A name as shown in an error: quoted, control characters escaped, long names cut."""
    text = repr(name) if isinstance(name, str) else f"{name!r}"
    return text if len(text) <= 80 else text[:77] + "..."
