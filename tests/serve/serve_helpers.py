"""Helpers for the serving tests: real `longreach serve` processes on loopback and test documents."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tiny_server_model import INFLLM_OPTIONS

API_KEY = "test-key-123"


def method_args(method: str = "infllm", options: dict | None = None) -> list[str]:
    options = INFLLM_OPTIONS if options is None and method == "infllm" else (options or {})
    out = ["--method", method]
    for key, value in options.items():
        out += ["-o", f"{key}={value}"]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`longreach serve` in a subprocess on 127.0.0.1; always stopped by its fixture."""

    def __init__(self, model_dir: Path, store: Path, log: Path, extra: list[str] = (),
                 api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key, self.log = api_key, log
        # One thread: the tiny model gains nothing from more, and the test machine's cores are shared.
        env = {**os.environ, "LONGREACH_TEST_KEY": api_key or "", "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, "-m", "longreach.cli.main", "serve", "--model", str(model_dir), "--port",
                str(self.port), "--store", str(store), "--prefill-chunk", "64", "--log-level", "warning",
                *method_args(), *extra]
        if api_key:
            argv += ["--api-key-env", "LONGREACH_TEST_KEY"]
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start:\n{self.log.read_text()}")

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs):
        import openai
        options = {"base_url": f"{self.url}/v1", "api_key": self.api_key or "unused", "max_retries": 0,
                   "timeout": 60, **kwargs}
        return openai.OpenAI(**options)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the server (graceful with SIGTERM) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


FACT = "The warranty period of the Zentrix 4000 is 7 years."


def document(n_sentences: int = 150, fact: str = FACT) -> str:
    """A long text with one fact in the middle (the tiny model cannot answer; the tests compare runs)."""
    colours = ["red", "green", "blue", "amber", "violet", "grey"]
    lines = [f"Note {i}: the {colours[i % 6]} lamp in room {i * 7 % 101} was checked on day {i}."
             for i in range(n_sentences)]
    lines.insert(n_sentences // 2, fact)
    return " ".join(lines)
