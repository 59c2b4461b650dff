"""End to end on the embedded SmolLM2-135M-Instruct (8K trained window)."""

import json
import subprocess
import sys

import pytest

from longreach.tasks import passkey_sample, score_passkey

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("method", ["dense", "infllm"])
def test_passkey_4k(smollm, method):
    sample = passkey_sample(smollm.tokenizer, 4096, depth=0.5, seed=1)
    result = smollm.with_method(method).generate(sample.prompt_ids, sample.max_new_tokens)
    assert score_passkey(result.text, sample.answers) == 1.0, result.text


def test_passkey_16k_beyond_the_trained_window_with_infllm(smollm):
    sample = passkey_sample(smollm.tokenizer, 16384, depth=0.3, seed=2)
    assert len(sample.prompt_ids) > smollm.adapter.trained_window
    result = smollm.with_method("infllm").generate(sample.prompt_ids, sample.max_new_tokens)
    assert score_passkey(result.text, sample.answers) == 1.0, result.text
    assert result.stats.kv_bytes_by_device  # memory accounted


def test_cli_passkey_json():
    proc = subprocess.run([sys.executable, "-m", "longreach.cli.main", "passkey", "--length", "2k",
                           "--method", "dense", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["correct"] is True and payload["stats"]["prompt_tokens"] <= 2048 - 10
