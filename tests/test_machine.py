"""longreach.machine: the label benchmark records carry."""

import torch

from longreach.machine import cpu_model, machine_facts, machine_label


def test_label_names_cpu_cores_and_threads():
    label = machine_label()
    assert cpu_model() and label.startswith(cpu_model())
    assert label.endswith(f"{torch.get_num_threads()} torch threads")
    assert machine_facts()["cpu"] == cpu_model()


def test_cuda_label_only_when_cuda_runs():
    if torch.cuda.is_available():
        assert machine_label("cuda:0").endswith("(CUDA)")
    else:
        assert machine_label("cuda:0") == machine_label("cpu") == machine_label()


def test_allocator_tuning_is_applied_once_on_glibc_and_can_be_declined(monkeypatch):
    import platform

    import longreach.machine as machine
    expected = platform.libc_ver()[0] == "glibc"
    monkeypatch.setattr(machine, "_tuned", None)
    assert machine.keep_freed_memory() is expected
    assert machine.keep_freed_memory() is expected  # once: the answer is kept
    monkeypatch.setattr(machine, "_tuned", None)
    monkeypatch.setenv("LONGREACH_MALLOC_TUNING", "0")
    assert machine.keep_freed_memory() is False
