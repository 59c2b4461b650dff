"""Drop the samples whose prefill ran much slower than their group's, so that a rerun measures them again.

On a shared 2-core machine any other work (a test run, a profiler) slows the sample running at that
moment, and its tokens/s would then stand in a published table. This script removes such samples
from a results directory (`longreach bench`, `results.jsonl`) or a benchmark result file
(`methods_compare.py`, JSON): a sample is dropped when its prefill tokens/s is below `--below`
(default 0.8) times the median of its group, the samples of the same task, length and method (with
options) measured on the same machine (records name it; older ones form one group). Rerunning the
same command then re-measures exactly those samples (same prompts, same greedy answers). Nothing
is lost: dropped samples are appended to `dropped.jsonl` in the directory (`<name>.dropped.jsonl`
beside a JSON file).

`--only NAMES` limits it to some configurations (JSON) or method labels (directory); with `--all`
every selected sample is dropped whatever its speed, e.g. after a change to code that they time.
Run it only while no sweep writes the file (a running sweep would keep writing to the old copy).

    python benchmarks/drop_slow_samples.py docs/results/ruler_smollm2 --dry-run
    python benchmarks/drop_slow_samples.py docs/results/methods_compare.json
    python benchmarks/drop_slow_samples.py docs/results/methods_compare.json --only dense+int8 --all
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def slow(samples: list[dict], group_of, speed_of, below: float) -> list[int]:
    """Indices of the samples slower than `below` x the median speed of their group."""
    groups = defaultdict(list)
    for sample in samples:
        groups[group_of(sample)].append(speed_of(sample))
    median = {group: statistics.median(speeds) for group, speeds in groups.items()}
    return [i for i, s in enumerate(samples) if speed_of(s) < below * median[group_of(s)]]


def _picked(samples: list[dict], group_of, speed_of, name_of, below: float | None,
            only: set[str] | None) -> list[int]:
    """Indices to drop: the slow samples (every sample when `below` is None) among those whose
    name (`name_of`) is in `only` (all of them when `only` is None)."""
    indices = range(len(samples)) if below is None else slow(samples, group_of, speed_of, below)
    return [i for i in indices if only is None or name_of(samples[i]) in only]


def _results_dir(path: Path, below: float | None, dry_run: bool, only: set[str] | None = None) -> list[dict]:
    results = path / "results.jsonl"
    lines = [line for line in results.read_text().splitlines() if line.strip()]
    samples = [json.loads(line) for line in lines]

    def group(s):
        return (s["task"], s["length"], s["method"], json.dumps(s.get("method_options", {}), sort_keys=True),
                s.get("machine", ""))

    dropped = set(_picked(samples, group, lambda s: s["prefill_tps"], lambda s: s["method"], below, only))
    if not dry_run and dropped:
        _replace(results, "".join(line + "\n" for i, line in enumerate(lines) if i not in dropped))
    return [samples[i] for i in sorted(dropped)]


def _result_file(path: Path, below: float | None, dry_run: bool, only: set[str] | None = None) -> list[dict]:
    data = json.loads(path.read_text())
    keys = list(data["cells"])
    cells = [data["cells"][k] | {"key": k} for k in keys]
    dropped = _picked(cells, lambda c: (c["config"], c["length"], c.get("machine", "")),
                      lambda c: c["prompt_tps"], lambda c: c["config"], below, only)
    if not dry_run and dropped:
        for i in dropped:
            del data["cells"][keys[i]]
        _replace(path, json.dumps(data, indent=1, default=str))
    return [cells[i] for i in dropped]


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a results directory (results.jsonl) or a benchmark JSON file")
    parser.add_argument("--below", type=float, default=0.8, help="fraction of the group median (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="list the slow samples, change nothing")
    parser.add_argument("--only", help="comma-separated configurations (JSON) or method labels (directory)")
    parser.add_argument("--all", action="store_true", help="drop every selected sample, slow or not (needs --only)")
    args = parser.parse_args()
    path = Path(args.path)
    if not 0 < args.below <= 1:
        print("--below must be in (0, 1]", file=sys.stderr)
        return 2
    if args.all and not args.only:
        print("--all needs --only (it would drop every sample)", file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    below = None if args.all else args.below  # None: every selected sample
    try:
        if (path / "results.jsonl").is_file():
            dropped, log_path = _results_dir(path, below, args.dry_run, only), path / "dropped.jsonl"
        elif path.is_file() and path.suffix == ".json":
            dropped, log_path = _result_file(path, below, args.dry_run, only), path.with_suffix(".dropped.jsonl")
        else:
            print(f"{path}: neither a results directory (results.jsonl) nor a benchmark .json file",
                  file=sys.stderr)
            return 2
    except (KeyError, ValueError) as error:
        print(f"{path}: not a longreach result file ({error})", file=sys.stderr)
        return 2
    for sample in dropped:
        speed = sample.get("prefill_tps", sample.get("prompt_tps"))
        print(f"{'would drop' if args.dry_run else 'dropped'} {sample['key']} ({speed:.0f} tok/s)")
    if dropped and not args.dry_run:
        with open(log_path, "a") as log:
            for sample in dropped:
                log.write(json.dumps(sample, default=str) + "\n")
    print(f"{len(dropped)} {'selected' if args.all else 'slow'} sample(s){' (dry run)' if args.dry_run else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
