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
