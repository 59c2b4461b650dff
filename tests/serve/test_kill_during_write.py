"""A writer killed (SIGKILL) in the middle of saving a context leaves no half context and harms no other."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from longreach.kv.persist import TEMP_PREFIX, TENSORS_FILE
from longreach.serve.contexts import ContextStore
from tiny import prompt_ids, tiny_lm

OPTIONS = {"n_local": 32, "n_init": 4, "block_size": 8, "topk_blocks": 2, "exec_block": 16}
TESTS = Path(__file__).resolve().parents[1]

# Adds a context but stalls after a few tensors reached the disk, so it can be killed mid-write.
WRITER = f"""
import sys, time
sys.path.insert(0, {str(TESTS)!r})
from tiny import prompt_ids, tiny_lm
from longreach.serve.contexts import ContextStore

lm = tiny_lm(method="infllm", **{OPTIONS!r})
store = ContextStore(sys.argv[1])
polls = []

def stall():
    polls.append(1)
    if len(polls) == 4:
        print("WRITING", flush=True)
        time.sleep(120)
    return False

store.add_ids(lm, "victim", prompt_ids(300, seed=3), should_stop=stall)
"""


def test_sigkill_while_writing(tmp_path):
    lm = tiny_lm(method="infllm", **OPTIONS)
    root = tmp_path / "store"
    store = ContextStore(root)
    store.add_ids(lm, "keep", prompt_ids(200))
    question = prompt_ids(20, seed=9)
    expected = lm.generate(question, 8, context=store.load(lm, "keep")).token_ids
    keep_bytes = (root / "keep" / TENSORS_FILE).read_bytes()

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "WRITING"
        partial = [p for p in root.iterdir() if p.name.startswith(TEMP_PREFIX)]
        assert len(partial) == 1 and (partial[0] / TENSORS_FILE).stat().st_size > 0
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()

    assert store.ids() == ["keep"]  # the half-written context is never listed
    assert [i.status for i in store.list(verify=True)] == ["ready"]
    reopened = ContextStore(root)  # a new store (e.g. a restarted server) sweeps the dead writer's files
    assert sorted(p.name for p in root.iterdir()) == ["keep"]
    assert (root / "keep" / TENSORS_FILE).read_bytes() == keep_bytes
    assert lm.generate(question, 8, context=reopened.load(lm, "keep")).token_ids == expected
    reopened.add_ids(lm, "victim", prompt_ids(300, seed=3))  # the id is free again
    assert reopened.ids() == ["keep", "victim"]
