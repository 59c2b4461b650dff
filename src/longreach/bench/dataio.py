"""Reading user-supplied data files: JSON lines with per-line problems, and the load result."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LongreachError
from .prompting import Sample


@dataclass(slots=True)
class LoadResult:
    """Samples read from files, and one line per record that could not be used."""
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_jsonl(path: str | Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """(line number, object) for each good line; problems name the file and line of each bad one.

    Blank lines are skipped; a missing file is a LongreachError.
    """
    path = Path(path)
    if not path.is_file():
        raise LongreachError(f"data file not found: {path}")
    records, problems = [], []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path.name}:{number}: not valid JSON ({exc.msg})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{path.name}:{number}: expected a JSON object, got {type(obj).__name__}")
                continue
            records.append((number, obj))
    return records, problems


def by_line(problems: list[str]) -> list[str]:
    """Problems "file:line: reason" ordered by line number (others keep their place at the end)."""
    def line(problem: str) -> int:
        parts = problem.split(":")
        return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 1 << 62
    return sorted(problems, key=line)


def require_dir(path: str | Path | None, what: str) -> Path:
    """The directory `path`, or a LongreachError saying it is missing."""
    if path is None:
        raise LongreachError(f"{what} needs a data directory")
    path = Path(path)
    if not path.is_dir():
        raise LongreachError(f"{what} data directory not found: {path}")
    return path
