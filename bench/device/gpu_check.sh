#!/usr/bin/env bash
# The GPU path in one call on a lent device machine (prepared by bench/device/prepare.sh):
# fine-tuning on CUDA with autocast, the half-precision scorer's docs/s for batches of 32 to 1024,
# the one-at-a-time BERT-base baseline beside it. Results land in $OUT (the device tool brings
# them back): gpu.txt, train.json, train.log, bench-model.json, bench-model.log.
set -euo pipefail
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
start=$(date +%s)
finsent model train --data "$carry/data/fpb/train.csv" --data "$carry/data/twitter_financial_news/train.csv" \
    --base-model /tmp/finsent-minilm ${FINSENT_CHECK_TRAIN_ARGS:-} --json > "$out/train.json" 2> "$out/train.log"
echo "training took $(( $(date +%s) - start )) s" | tee -a "$out/gpu.txt"
version=$("$python" -c "import json, sys; print(json.load(open(sys.argv[1]))['version'])" "$out/train.json")
finsent bench model --model "$version" --data "$carry/data/fpb/train.csv" \
    --data "$carry/data/twitter_financial_news/train.csv" ${FINSENT_CHECK_BENCH_ARGS:-} \
    --output "$out/bench-model.json" > "$out/bench-model.log" 2>&1
tail -n 40 "$out/bench-model.log"
