"""lm-eval's `longreach` model: exact log-probabilities, and a run of local YAML tasks (no download)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from bench_helpers import cli, tiny_model_dir

import longreach

pytest.importorskip("lm_eval")

TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {kind}
{body}
"""
BODIES = {
    "generate_until": 'doc_to_text: "Q: {{question}}\\nA:"\ndoc_to_target: "{{answer}}"\n'
                      'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 3\n'
                      "metric_list:\n  - metric: exact_match",
    "multiple_choice": 'doc_to_text: "Q: {{question}}\\nA:"\ndoc_to_choice: "{{choices}}"\n'
                       "doc_to_target: label\nmetric_list:\n  - metric: acc",
    "loglikelihood_rolling": 'doc_to_text: ""\ndoc_to_target: "{{question}} {{answer}}"\n'
                             "metric_list:\n  - metric: word_perplexity",
}


@pytest.fixture(scope="module")
def adapter():
    from longreach.bench.lm_eval_adapter import LongreachLM
    return LongreachLM(lm=longreach.load(tiny_model_dir(), "dense"), method="dense", logit_rows=5)


def reference_logprob(lm, ids, first):
    with torch.no_grad():
        logits = lm.adapter.hf_model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return sum(logprobs[i - 1, ids[i]].item() for i in range(first, len(ids)))


def test_logprobs_match_the_model(adapter):
    ids = adapter.tok_encode("The quick brown fox jumps over the lazy dog and runs away.")
    for first in (1, 4, len(ids) - 1):  # several logit_rows pieces, and a prefilled prefix
        value, _ = adapter._logprobs(ids, first)
        assert value == pytest.approx(reference_logprob(adapter.lm, ids, first), rel=1e-4, abs=1e-3)


def test_rolling_loglikelihood_and_greedy_generation_match_the_model(adapter):
    from types import SimpleNamespace

    text = "The quick brown fox jumps over the lazy dog and runs away into the woods."
    ids = [adapter.prefix_token_id] + adapter.tok_encode(text, add_special_tokens=False)
    [rolling] = adapter.loglikelihood_rolling([SimpleNamespace(args=(text,))], disable_tqdm=True)
    assert rolling == pytest.approx(reference_logprob(adapter.lm, ids, 1), rel=1e-4, abs=1e-3)

    context = "Q: What color is the sky?\nA:"
    [generated] = adapter.generate_until([SimpleNamespace(args=(context, {"until": ["zzz"], "max_gen_toks": 6}))],
                                         disable_tqdm=True)
    prompt = adapter.tok_encode(context)
    with torch.no_grad():
        hf = adapter.lm.adapter.hf_model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                                  eos_token_id=None, pad_token_id=0)
    expected = adapter.tokenizer.decode(hf[0, len(prompt):].tolist(), skip_special_tokens=True)
    assert generated == expected.split("zzz")[0] and generated
    stop = expected[len(expected) // 2]  # a character it generates: the text is cut before it
    [cut] = adapter.generate_until([SimpleNamespace(args=(context, {"until": [stop], "max_gen_toks": 6}))],
                                   disable_tqdm=True)
    assert cut == expected[:expected.index(stop)]


def test_lm_eval_run_of_local_tasks(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data.jsonl"
    rows = [{"question": "What color is the sky?", "answer": "blue", "choices": ["blue", "green"],
             "label": 0},
            {"question": "What color is grass?", "answer": "green", "choices": ["red", "green"], "label": 1}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for kind, body in BODIES.items():
        (tasks / f"{kind}.yaml").write_text(TASK.format(name=f"lr_{kind}", data=data, kind=kind, body=body))
    out = tmp_path / "out"
    code, printed, err = cli(capsys, "lm-eval", "run", "--model", "longreach", "--model_args",
                             f"model={tiny_model_dir()},method=streaming,window=16,n_sink=2",
                             "--tasks", *[f"lr_{k}" for k in BODIES], "--include_path", tasks,
                             "--output_path", out)
    assert code == 0, err[-2000:]
    result = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert 0 <= result["lr_generate_until"]["exact_match,none"] <= 1
    assert 0 <= result["lr_multiple_choice"]["acc,none"] <= 1
    assert result["lr_loglikelihood_rolling"]["word_perplexity,none"] > 1


def test_plugin_hook_registers_longreach_for_plain_lm_eval(tmp_path):
    from longreach.bench import lm_eval_plugin

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    path = lm_eval_plugin.install(site_dir)
    assert path.name == "longreach-lm-eval.pth"
    script = textwrap.dedent(f"""
        import site, sys
        site.addsitedir({str(site_dir)!r})
        assert "longreach" not in sys.modules and "lm_eval" not in sys.modules  # nothing imported at start
        from lm_eval.api.registry import get_model, model_registry
        print(get_model("longreach").__name__, "hf" in model_registry)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["LongreachLM", "True"]
    # lm-eval's own command line (`lm_eval --model longreach ...`), as a user would type it
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"question": "What color is the sky?", "answer": "blue"}) + "\n")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "gen.yaml").write_text(TASK.format(name="lr_gen", data=data, kind="generate_until",
                                                body=BODIES["generate_until"]))
    argv = ["lm_eval", "--model", "longreach", "--model_args", f"model={tiny_model_dir()},method=infllm",
            "--tasks", "lr_gen", "--include_path", str(tasks), "--output_path", str(tmp_path / "out")]
    command = textwrap.dedent(f"""
        import runpy, site, sys
        site.addsitedir({str(site_dir)!r})
        sys.argv = {argv!r}
        runpy.run_module("lm_eval", run_name="__main__")
    """)
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **offline})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert result["config"]["model"] == "longreach" and "exact_match,none" in result["results"]["lr_gen"]
    lm_eval_plugin.uninstall(site_dir)
    assert not path.exists()
