"""`longreach context add|list|rm` and `longreach ask --context` (run in process)."""

from __future__ import annotations

import json

import pytest
from serve_helpers import document

from longreach.cli.main import main


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    doc = tmp_path / "manual.txt"
    doc.write_text(document(40) + "\n")
    model = ["--model", str(tiny_model_dir), "--method", "dense", "--prefill-chunk", "64"]
    return doc, ["--store", str(tmp_path / "store")], model


def _run(capsys, argv) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_add_ask_list_remove(capsys, setup):
    doc, store, model = setup
    code, out, _ = _run(capsys, ["context", "add", str(doc), *store, *model])
    assert code == 0 and out.startswith("manual\t")
    tokens = int(out.split("\t")[1].split()[0])
    code, out, _ = _run(capsys, ["context", "list", "--json", *store])
    [listed] = json.loads(out)["contexts"]
    assert listed["id"] == "manual" and listed["status"] == "ready" and listed["tokens"] == tokens

    question = ["--question", "What is the warranty period?", "--max-new-tokens", "10"]
    code, from_context, err = _run(capsys, ["ask", "--context", "manual", *question, *store, *model])
    assert code == 0 and f"{tokens} tokens loaded" in err
    code, from_file, _ = _run(capsys, ["ask", "--file", str(doc), *question, *model])
    assert code == 0 and from_context == from_file  # dense is exact: same text either way

    code, out, _ = _run(capsys, ["context", "rm", "manual", *store])
    assert code == 0 and "removed" in out
    code, out, _ = _run(capsys, ["context", "list", *store])
    assert "no contexts" in out


def test_squeezed_reads_a_file_as_a_fixed_document_like_a_stored_context(capsys, setup):
    """`ask --file` gives squeezed the document first (clustered alone), then the question: the
    same answer as a stored context of that document."""
    doc, store, model = setup
    squeezed = [*model[:2], "--method", "squeezed", "-o", "budget=0.25", "-o", "n_local=64",
                "-o", "block_size=16", "-o", "n_init=4", "-o", "exec_block=32", "--prefill-chunk", "64"]
    assert _run(capsys, ["context", "add", str(doc), "--name", "m", *store, *squeezed])[0] == 0
    question = ["--question", "What is the warranty period?", "--max-new-tokens", "8"]
    code, from_context, err = _run(capsys, ["ask", "--context", "m", *question, *store, *squeezed])
    assert code == 0, err
    code, from_file, _ = _run(capsys, ["ask", "--file", str(doc), *question, *squeezed])
    assert code == 0 and from_file == from_context


def _error(capsys, argv, fragment):
    code, _, err = _run(capsys, argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_bad_input_is_one_line(capsys, setup):
    doc, store, model = setup
    assert _run(capsys, ["context", "add", str(doc), "--name", "doc", *store, *model])[0] == 0
    _error(capsys, ["context", "add", str(doc), "--name", "doc", *store, *model], "already exists")
    _error(capsys, ["context", "add", str(doc), "--name", "../doc", *store, *model], "invalid context id")
    _error(capsys, ["context", "rm", "absent", *store], "no context")
    other = ["--model", model[1], "--method", "infllm", "-o", "n_local=256", "-o", "exec_block=64"]
    _error(capsys, ["ask", "--context", "doc", "--question", "q", *store, *other], "--method dense")
    _error(capsys, ["ask", "--context", "absent", "--question", "q", *store, *model], "no context")
