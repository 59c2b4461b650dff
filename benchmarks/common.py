"""Helpers shared by benchmark scripts: resumable result files, machine facts, markdown tables."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from longreach.machine import machine_facts, machine_label


class ResultFile:
    """A JSON file of finished cells, rewritten atomically after each one so a run can resume.

    `config` holds what every cell depends on beyond its key (options, templates, method
    defaults): a file made under another config is refused rather than mixed in.
    """

    def __init__(self, path: str | Path, config: dict):
        self.path = Path(path)
        self.data = {"config": config, "machine": machine_facts(), "cells": {}, "extra": {}}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if json.loads(json.dumps(config, default=str)) != saved.get("config"):
                raise SystemExit(f"{self.path} holds cells measured with another configuration "
                                 f"({saved.get('config')}); choose another --out or remove it")
            self.data["cells"] = saved.get("cells", {})
            self.data["extra"] = saved.get("extra", {})

    def done(self, key: str) -> bool:
        return key in self.data["cells"]

    def put(self, key: str, value: dict) -> None:
        """Record a finished cell, stamped with the machine it ran on (a file filled over
        several sessions may mix machines; the header's `machine` is the latest run's)."""
        self.data["cells"][key] = {**value, "machine": value.get("machine") or machine_label()}
        self.save()

    def put_extra(self, key: str, value) -> None:
        self.data["extra"][key] = value
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def matmul_gflops(size: int = 1024, seconds: float = 2.0) -> float:
    """Measured fp32 matmul throughput of this machine (the roofline for prefill)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machines_line(cells: list[dict]) -> str:
    """The line "Measured on: <machine>: N cells; ..." for a file filled over several sessions."""
    counts: dict[str, int] = {}
    for cell in cells:
        label = cell.get("machine") or "not recorded"
        counts[label] = counts.get(label, 0) + 1
    return "Measured on: " + "; ".join(f"{label}: {n} cells" for label, n in counts.items()) + "."
