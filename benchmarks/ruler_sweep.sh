#!/usr/bin/env bash
# The published long-context results (issue 3, part 7) on the embedded SmolLM2-135M-Instruct:
#   RULER's synthetic tasks: infllm at 4K, 16K (5 samples per task) and 32K (3 samples); dense at 4K and 8K (5);
#   NIAH heatmap (11 depths): infllm at 2K-64K, dense at 2K-16K.
# Results, report.md and report.html land in docs/results/{ruler,niah}_smollm2/.
#
# Every part is resumable: interrupt it and run the same part again, finished samples are kept and skipped.
# Run the parts one by one (they are long on a CPU), e.g.
#   bash benchmarks/ruler_sweep.sh ruler-dense
#   bash benchmarks/ruler_sweep.sh ruler-infllm
#   bash benchmarks/ruler_sweep.sh report
# or everything in order with `all`. Extra arguments go to `longreach bench` (e.g. --ray-address auto).
set -euo pipefail
cd "$(dirname "$0")/.."

RULER_OUT=${RULER_OUT:-docs/results/ruler_smollm2}
NIAH_OUT=${NIAH_OUT:-docs/results/niah_smollm2}
# RULER's 13 tasks. The 11 synthetic ones are generated offline; qa_1 and qa_2 read SQuAD / HotpotQA
# files (pass --squad FILE / --hotpotqa FILE): without them they are skipped and the report says so.
SYNTHETIC=niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multikey_3,niah_multivalue,niah_multiquery,vt,cwe,fwe
TASKS=$SYNTHETIC,qa_1,qa_2
DEPTHS=0:100:11

part=${1:-all}
shift || true

ruler() { longreach bench --task ruler --subtasks "$TASKS" --seed 0 --out "$RULER_OUT" "$@"; }
niah() { longreach bench --task niah --depths "$DEPTHS" --out "$NIAH_OUT" "$@"; }

run() {
    case "$1" in
        ruler-dense)      ruler --methods dense --lengths 4k,8k --samples 5 "${@:2}" ;;
        ruler-infllm)     ruler --methods infllm --lengths 4k,16k --samples 5 "${@:2}" ;;
        ruler-infllm-32k) ruler --methods infllm --lengths 32k --samples 3 "${@:2}" ;;
        niah-dense)       niah --methods dense --lengths 2k,4k,8k,16k "${@:2}" ;;
        niah-infllm)      niah --methods infllm --lengths 2k,4k,8k,16k,32k,64k "${@:2}" ;;
        report)           longreach report "$RULER_OUT" && longreach report "$NIAH_OUT" ;;
        *) echo "unknown part $1 (ruler-dense, ruler-infllm, ruler-infllm-32k, niah-dense, niah-infllm, report, all)" >&2
           exit 2 ;;
    esac
}

if [ "$part" = all ]; then
    for p in ruler-dense ruler-infllm niah-dense niah-infllm ruler-infllm-32k report; do
        run "$p" "$@"
    done
else
    run "$part" "$@"
fi
