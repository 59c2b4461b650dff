"""Helpers shared by benchmark scripts: resumable result files, machine facts, markdown tables."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch


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
        self.data["cells"][key] = value
        self.save()

    def put_extra(self, key: str, value) -> None:
        self.data["extra"][key] = value
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def machine_facts() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d")}


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
