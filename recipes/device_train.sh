#!/usr/bin/env bash
# Train prompt-generator variants side by side on one GPU, from what recipes/device_pack.py packed.
# Usage (on the GPU machine, repo root, after the first GGUF part was kept in /tmp/part1):
#   bash recipes/device_train.sh OUT_DIR MINUTES
# Runs three variants concurrently (frozen decoder; + contrastive term; + LoRA r=16), each with a time budget,
# then copies their final generator weights, logs and held-out evaluations into OUT_DIR.
set -u
out=${1:?OUT_DIR}; minutes=${2:?MINUTES}
if ! python3 -c "import pydantic, gguf" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 recipes/device_pack.py unpack --src .gpu --part1 /tmp/part1 --to /tmp/work 2>&1 | grep -v "it/s" | tail -3 || exit 1
common="prompt --work /tmp/work --decoder /tmp/work/decoder --steps 20000 --batch-size 64 --eval-every 1000 --time-budget $minutes ${EXTRA:-}"
python3 recipes/train_mini.py $common --run frozen > /tmp/frozen.log 2>&1 &
python3 recipes/train_mini.py $common --run contrastive --contrastive 1.0 > /tmp/contrastive.log 2>&1 &
python3 recipes/train_mini.py $common --run lora --lora-rank 16 > /tmp/lora.log 2>&1 &
wait
python3 - "$out" <<'PY'
import shutil, sys, tarfile
from pathlib import Path
from dglm.prompt import PromptGenerator
out, runs = Path(sys.argv[1]), Path("/tmp/work/runs")
for run in ("frozen", "contrastive", "lora"):
    dst = Path("/tmp/results") / run
    try:
        PromptGenerator.from_pretrained(runs / run / "prompt").half().save_pretrained(dst / "prompt")
    except Exception as e:  # a failed run still returns its logs
        print(run, "has no generator:", e)
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("result.json", "log.jsonl"):
        if (runs / run / name).is_file():
            shutil.copy(runs / run / name, dst / name)
    with tarfile.open(out / f"{run}.tar", "w") as tar:
        tar.add(dst, arcname=run)
    if (runs / run / "lora").is_dir():
        with tarfile.open(out / f"{run}_adapter.tar", "w") as tar:
            tar.add(runs / run / "lora", arcname=f"{run}_adapter")
PY
for run in frozen contrastive lora; do
  echo "== $run"; grep -v "it/s\]" /tmp/$run.log | grep -v "^ " | tail -3; cat /tmp/work/runs/$run/result.json 2>/dev/null | tail -16
done
ls -la "$out"
