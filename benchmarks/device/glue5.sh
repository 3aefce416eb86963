#!/usr/bin/env bash
# The five GLUE sweeps of figures/RESULTS.md ("GLUE, five tasks") on one H200, side by side as five
# processes (the baselines' steps are host-bound, so the processes fill each other's GPU gaps).
# Run on the device machine from the repository root with .devcarry/ (../shared/tools/devcarry) and
# .whl/ (click, tqdm) carried:  bash benchmarks/device/glue5.sh RUNS_DIR OUT_DIR
set -u
runs=$1 out=$2
python -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
start=$(date +%s)
for t in sst2:63 rte:32 mrpc:32 cola:63 stsb:32; do
  task=${t%:*} pack=${t#*:}
  ( timeout "${GLUE_TIMEOUT:-520}" python -m lowrank_lab rank-sweep "analyses/glue_$task.toml" \
      --set model.name=.devcarry/minilm-fp16 --set data.path=.devcarry/glue \
      --set sweep.out_dir="$runs" --set sweep.pack="$pack" >"$out/log-$task.txt" 2>&1
    echo "$task rc=$? seconds=$(( $(date +%s) - start ))" >>"$out/rc.txt" ) &
done
wait
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >>"$out/rc.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >>"$out/rc.txt"
tar czf "$out/metrics.tar.gz" -C "$runs" --exclude='*.safetensors' --exclude=packs --exclude=.lock .
