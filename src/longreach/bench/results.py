"""A results directory: the configuration it belongs to, one JSON line per sample, and notes.

    runs/ruler/config.json     what every line was measured with (model, chat, seed, task, data)
    runs/ruler/results.jsonl   one Record per (cell, method), appended and flushed as it finishes
    runs/ruler/notes.jsonl     skipped subtasks, unreadable data lines, and one summary per run

Lines are only ever appended, so an interrupted run loses at most the sample in flight; a line
cut short by a crash is ignored on reading (and that sample runs again).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import LongreachError

FORMAT = 1
# Configuration keys added since format 1, with the value every run had before they were recorded.
ADDED_KEYS = {"prefill_chunk": 512, "dtype": None, "decode_weights": None}


@dataclass(slots=True)
class Record:
    """One sample run by one method: what was asked, what came back, its score and its cost."""
    key: str
    task: str
    subtask: str
    length: int
    depth: float | None
    sample: int
    seed: int | None
    method: str                   # label, e.g. infllm[selection=question]
    method_name: str
    method_options: dict
    prompt_hash: str
    prompt_tokens: int
    max_new_tokens: int
    answers: list[str]
    prediction: str
    score: float                  # 0..1 with the sample's metric
    metric: str
    finish_reason: str
    generated_tokens: int
    prefill_tps: float
    decode_tps: float
    peak_memory_mb: float
    kv_bytes: int
    seconds: float                # model time: prefill + decode
    build_seconds: float          # this record's share of building the prompt
    score_seconds: float
    needle_recall: float | None = None
    meta: dict = field(default_factory=dict)   # dataset, difficulty, item id, ...
    machine: str = ""             # where it ran (longreach.machine.machine_label); "" before it was recorded
    document_end: int | None = None  # fixed-context methods: the prompt's document was prefilled first, up to here

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, values: dict) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def prompt_hash(ids: list[int]) -> str:
    """A short, stable fingerprint of a prompt's token ids."""
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


def _describe(values: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


class ResultsDir:
    """The files of one sweep's results, opened for a configuration (`identity`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file = self.path / "config.json"
        self.results_file = self.path / "results.jsonl"
        self.notes_file = self.path / "notes.jsonl"

    # --- configuration -----------------------------------------------------------------
    def identity(self) -> dict | None:
        """The stored configuration, or None for a new directory."""
        if not self.config_file.is_file():
            return None
        try:
            return json.loads(self.config_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise LongreachError(f"{self.config_file} is unreadable ({exc}); use another --out") from None

    def open_for(self, identity: dict) -> None:
        """Create the directory for `identity`, or check that it already holds the same configuration."""
        identity = {"format": FORMAT, **identity}
        stored = self.identity()
        if stored is None:
            if self.path.exists() and not self.path.is_dir():
                raise LongreachError(f"--out {self.path} is a file, not a directory")
            if self.results_file.exists():
                raise LongreachError(f"{self.path} holds results without a config.json; use another --out")
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_config(identity)
            return
        def recorded(key):  # a key added after the directory was made holds its default there
            return stored.get(key, ADDED_KEYS.get(key))

        differ = {k: (recorded(k), identity.get(k)) for k in sorted(set(stored) | set(identity))
                  if recorded(k) != identity.get(k)}
        if differ and not self.read():  # nothing recorded yet (e.g. a first run refused its input)
            self._write_config(identity)
            return
        if differ:
            first = "; ".join(f"{k}: {old!r} there, {new!r} asked" for k, (old, new) in differ.items())
            raise LongreachError(f"{self.path} holds results of another configuration ({first}); "
                                 f"use another --out or the same settings")

    def _write_config(self, identity: dict) -> None:
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.config_file)

    # --- records -----------------------------------------------------------------------
    def read(self, problems: list[str] | None = None) -> list[Record]:
        """Every complete record; a line that is not one (e.g. cut by a crash) is listed in problems."""
        if not self.results_file.is_file():
            return []
        records = []
        with self.results_file.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    values = json.loads(line)
                    if not isinstance(values, dict):
                        raise TypeError(f"a JSON {type(values).__name__}, not an object")
                    records.append(Record.from_dict(values))
                except (json.JSONDecodeError, TypeError) as exc:
                    if problems is not None:
                        problems.append(f"{self.results_file.name}:{number}: unreadable record ({exc})")
        return records

    def appender(self) -> Appender:
        return Appender(self.results_file)

    # --- notes -------------------------------------------------------------------------
    def note(self, kind: str, **values) -> None:
        with self.notes_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, **values}, ensure_ascii=False) + "\n")

    def notes(self) -> list[dict]:
        if not self.notes_file.is_file():
            return []
        out = []
        for line in self.notes_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


class Appender:
    """Appends records as whole lines, flushed and synced one by one."""

    def __init__(self, path: Path):
        self.handle = path.open("a", encoding="utf-8")
        if self.handle.tell() > 0:
            with path.open("rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":  # a line cut short: end it so the next one stands alone
                    self.handle.write("\n")

    def write(self, record: Record) -> None:
        self.handle.write(record.to_json() + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def describe_identity(identity: dict) -> str:
    """One line naming a configuration (for messages and reports)."""
    return _describe({k: v for k, v in identity.items() if k != "format"})
