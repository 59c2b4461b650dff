"""Bad input gets one line on stderr and exit code 2, never a traceback."""

import json
import subprocess
import sys

import pytest

from longreach.cli.main import main


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGREACH_CACHE", str(tmp_path / "cache"))


def _expect_error(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and fragment in err


def test_missing_file(capsys):
    _expect_error(capsys, ["ask", "--file", "/no/such/book.txt", "--question", "q"], "file not found")


def test_directory_instead_of_file(capsys, tmp_path):
    _expect_error(capsys, ["ask", "--file", str(tmp_path), "--question", "q"], "is a directory")


def test_non_utf8_file(capsys, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    _expect_error(capsys, ["ask", "--file", str(path), "--question", "q"], "not UTF-8")


def test_empty_file_and_empty_prompt(capsys, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("  \n")
    _expect_error(capsys, ["ask", "--file", str(path), "--question", "q"], "is empty")
    _expect_error(capsys, ["generate", "--prompt", "   "], "empty")
    _expect_error(capsys, ["ask", "--file", str(path), "--question", " "], "empty")


def test_unknown_method_and_option(capsys):
    _expect_error(capsys, ["passkey", "--method", "magic"], "unknown method 'magic'")
    _expect_error(capsys, ["passkey", "-o", "n_locale=5"], "unknown option(s) for method 'infllm'")
    _expect_error(capsys, ["passkey", "-o", "n_local"], "not KEY=VALUE")


@pytest.mark.parametrize("argv,fragment", [
    (["passkey", "-o", "n_local=-5"], "n_local must be >= 1"),
    (["passkey", "-o", "topk_blocks=lots"], "not a valid"),
    (["passkey", "--depth", "1.5"], "--depth"),
    (["passkey", "--length", "10"], "too small"),
    (["passkey", "--length", "12q"], "not a count"),
    (["passkey", "--length", "inf"], "not a count"),
    (["passkey", "--length", "nan"], "not a count"),
    (["passkey", "--prefill-chunk", "0"], "prefill-chunk"),
    (["generate", "--prompt", "hi", "--max-new-tokens", "-3"], "max-new-tokens"),
    (["generate", "--prompt", "hi", "--dtype", "int3"], "unknown dtype"),
    (["generate", "--prompt", "hi", "--decode-weights", "int4"], "--decode-weights must be float16"),
    (["bench", "--task", "passkey", "--out", "x", "--decode-weights", "half"], "--decode-weights must be float16"),
])
def test_out_of_range_values(capsys, isolated_cache, argv, fragment):
    _expect_error(capsys, argv, fragment)


def test_unsupported_architecture(capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    _expect_error(capsys, ["generate", "--model", str(tmp_path), "--prompt", "hi"],
                  "unsupported architecture 'gpt2'; supported: llama, mistral, qwen2, qwen3")


def test_corrupt_gguf(capsys, tmp_path, isolated_cache):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + bytes(range(200)))
    _expect_error(capsys, ["generate", "--model", str(path), "--prompt", "hi"], "cannot read GGUF file")


def test_missing_model_path(capsys):
    _expect_error(capsys, ["generate", "--model", "./nowhere/model", "--prompt", "hi"], "model path not found")


def test_argparse_errors_are_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "longreach.cli.main", "passkey", "--no-such-flag"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unrecognized arguments" in proc.stderr


def test_methods_lists_every_option_with_defaults(capsys):
    assert main(["methods", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert set(listing) >= {"dense", "streaming", "infllm"}
    assert listing["infllm"]["options"]["block_size"]["default"] == 128
