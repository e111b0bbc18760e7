#!/usr/bin/env bash
# Prepares the GPU check (bench/device/gpu_check.sh) for a session lent a device machine: what
# that machine lacks goes into .device-carry/ (git-ignored), which the call carries.
#   bench/device/prepare.sh            # here, once (needs PyPI and ../shared/data)
#   then the device tool's run: command "bash bench/device/gpu_check.sh", carry [".device-carry"]
# The machine has Python 3.12 with torch and transformers, and reaches nothing outside: our
# other imports travel as wheels, the training files as copies, and the packaged MiniLM in
# half precision (the whole tree may carry 64 MiB; its fp32 weights alone are 87 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=.device-carry
data=${FINSENT_DEVICE_DATA:-../shared/data}
rm -rf "$carry" && mkdir -p "$carry/wheels" "$carry/data"
pins=(pydantic pydantic_core pydantic-settings python-dotenv annotated-types typing-inspection orjson typer rich)
for name in "${pins[@]}"; do
    pin=$(grep -i -E "^${name}==" constraints.txt) || { echo "no pin for $name in constraints.txt" >&2; exit 1; }
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$carry/wheels" "$pin"
done
for source in fpb twitter_financial_news; do  # copies for the call only: never committed (DESIGN.md)
    mkdir -p "$carry/data/$source" && cp "$data/$source/train.csv" "$carry/data/$source/train.csv"
done
.venv/bin/python -m bench.device.half_base "$carry/minilm-fp16"
du -sh "$carry"
