"""benchmarks/decode_kernels.py: bad input is refused; both modes decode the same greedy tokens."""

import os
import sys
from pathlib import Path

import pytest

from tiny import prompt_ids, tiny_lm

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import decode_kernels  # noqa: E402


@pytest.mark.parametrize("runs", ["dense", "dense@lots", "nomethod@4k"])
def test_bad_runs_exit_2(monkeypatch, capsys, runs):
    monkeypatch.setattr(sys, "argv", ["decode_kernels.py", "--runs", runs])
    assert decode_kernels.main() == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("method", ["dense", "squeezed"])
def test_both_modes_decode_the_same_tokens_and_leave_the_environment_alone(method):
    lm = tiny_lm(method=method)
    session = lm.new_session()
    ids = prompt_ids(1500)
    logits = session.prefill_document(ids, 1400 if method == "squeezed" else None, 256)
    compiled = decode_kernels.decode(session, logits, 3, kernels=True, timed=method == "squeezed")
    plain = decode_kernels.decode(session, logits, 3, kernels=False)
    assert compiled["tokens"] == plain["tokens"] and len(plain["tokens"]) == 5
    assert "LONGREACH_KERNELS" not in os.environ
    assert ("lookup_us" in compiled) == (method == "squeezed")


def test_a_setting_of_the_caller_is_restored(monkeypatch):
    lm = tiny_lm(method="dense")
    session = lm.new_session()
    logits = session.prefill(prompt_ids(300), 128)
    monkeypatch.setenv("LONGREACH_KERNELS", "0")
    decode_kernels.decode(session, logits, 2, kernels=True)
    assert os.environ["LONGREACH_KERNELS"] == "0"
