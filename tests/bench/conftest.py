import json

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded SmolLM2 tokenizer (the first load converts the GGUF once, then it is fast)."""
    from longreach.models import load_tokenizer
    return load_tokenizer()


@pytest.fixture
def write_jsonl():
    """write_jsonl(path, rows): rows are dicts, or raw strings for malformed lines; returns path."""
    def write(path, rows):
        lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    return write
