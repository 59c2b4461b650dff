"""Fixtures for the serving tests: a tiny model directory, an in-process LongLM, a shared server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from serve_helpers import API_KEY, Server
from tiny_server_model import INFLLM_OPTIONS, save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def chat_lm(tiny_model_dir):
    """The tiny model with the real tokenizer, in process, using infllm (as the servers do)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longreach.engine import LongLM
    from longreach.methods import method_config
    from longreach.models import DecoderAdapter

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return LongLM(DecoderAdapter(model), tokenizer, method_config("infllm", INFLLM_OPTIONS), prefill_chunk=64)


@pytest.fixture(scope="session")
def server(tiny_model_dir, tmp_path_factory):
    """One shared server with an API key, small caps and a small queue (for 413/400/429 tests)."""
    root = tmp_path_factory.mktemp("shared-server")
    extra = ["--queue-size", "4", "--max-prompt-tokens", "1500", "--max-new-tokens", "3000",
             "--max-body-mb", "0.1", "--max-upload-mb", "1"]
    srv = Server(tiny_model_dir, root / "store", root / "server.log", extra, api_key=API_KEY)
    yield srv
    srv.stop()
