#!/usr/bin/env bash
# The GPU path in one call on a lent device machine (prepared by bench/device/prepare.sh):
# fine-tuning on CUDA with autocast, the half-precision scorer's docs/s for batches of 32 to 1024
# with the one-at-a-time BERT-base baseline beside it, what fp16 costs against fp32 on the
# validation rows, then training recipes over several seeds until the budget is spent
# (bench/device/recipe_sweep.py). Results land in $OUT (the device tool brings them back):
# gpu.txt, train.json, train.log, bench-model.json, bench-model.log, sweep.jsonl, sweep.log.
# FINSENT_CHECK_BUDGET_S (default 480) bounds the script's seconds: sweep runs start until two
# minutes before it and are stopped 30 s after it.
set -euo pipefail
began=$(date +%s)
cd "$(dirname "$0")/../.."
carry=.device-carry
out=${OUT:-/tmp/finsent-gpu}
mkdir -p "$out"
python=python3
if [ "${FINSENT_CHECK_SELF_TEST:-}" = 1 ]; then  # a dry run here, on the CPU, with the project's .venv
    python=.venv/bin/python
else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/finsent-site "$carry"/wheels/*.whl
    python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'"
fi
export PYTHONPATH=/tmp/finsent-site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export FINSENT_STATE_DIR=/tmp/finsent-state FINSENT_ELASTICSEARCH_URL=http://127.0.0.1:9  # no mirror there
finsent() { "$python" -c "from finsent.cli import main; main()" "$@"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } | tee "$out/gpu.txt"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
"$python" -m bench.device.half_base --to-fp32 "$carry/minilm-fp16" /tmp/finsent-minilm
# Each stage may fail alone: a device call is too scarce to lose the later stages to an earlier one.
start=$(date +%s)
if finsent model train --data "$carry/data/fpb/train.csv" --data "$carry/data/twitter_financial_news/train.csv" \
        --base-model /tmp/finsent-minilm ${FINSENT_CHECK_TRAIN_ARGS:-} --json > "$out/train.json" 2> "$out/train.log"
then
    echo "training took $(( $(date +%s) - start )) s" | tee -a "$out/gpu.txt"
    version=$("$python" -c "import json, sys; print(json.load(open(sys.argv[1]))['version'])" "$out/train.json")
    finsent bench model --model "$version" --data "$carry/data/fpb/train.csv" \
        --data "$carry/data/twitter_financial_news/train.csv" ${FINSENT_CHECK_BENCH_ARGS:-} \
        --output "$out/bench-model.json" > "$out/bench-model.log" 2>&1 || echo "bench model failed: rc $?"
    tail -n 40 "$out/bench-model.log"
    gpu=cuda; [ "${FINSENT_CHECK_SELF_TEST:-}" = 1 ] && gpu=cpu
    "$python" -m bench.device.half_agreement --version "$version" --data "$carry/data/fpb/train.csv" \
        --data "$carry/data/twitter_financial_news/train.csv" --gpu "$gpu" 2>&1 | tee -a "$out/gpu.txt" \
        || echo "half_agreement failed: rc $?" | tee -a "$out/gpu.txt"
else
    echo "training failed: rc $?" | tee -a "$out/gpu.txt"; tail -n 20 "$out/train.log"
fi
budget=${FINSENT_CHECK_BUDGET_S:-480}
deadline=$(( budget - ($(date +%s) - began) - 120 ))  # the last runs started need about two minutes
echo "sweep: $deadline s to start runs in" | tee -a "$out/gpu.txt"
if [ "$deadline" -gt 0 ]; then
    "$python" -m bench.device.recipe_sweep --data "$carry/data/fpb/train.csv" \
        --data "$carry/data/twitter_financial_news/train.csv" --base-model /tmp/finsent-minilm \
        --out "$out/sweep.jsonl" --deadline-s "$deadline" --grace-s 150 ${FINSENT_CHECK_SWEEP_ARGS:-} \
        2> "$out/sweep.log"
fi
