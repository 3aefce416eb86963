#!/usr/bin/env bash
# Issue 27's GPU measurements, one stage per call (a call runs at most 10 minutes; each stage fits):
#   bash benchmarks/device/issue27.sh tests   $OUT   the GPU tests of the plan and of bf16 training
#   bash benchmarks/device/issue27.sh peft    $OUT SHAPE [extra bench_peft_cells.py args]
#   bash benchmarks/device/issue27.sh profile $OUT SHAPE [extra profile_decoder_step.py args]
# SHAPE: smollm2-135m, llama-3.2-1b or llama-3-8b (benchmarks/configs; random weights, nothing to
# carry). At 8B the PEFT side trains one cell per rank (7 cells, stated in its table). Each stage
# writes its table (.txt), its JSON where there is one, and nvidia-smi's view into OUT.
set -u
stage=$1 out=$2
shift 2
mkdir -p "$out"
python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt"
case $stage in
  tests)
    python -m pytest -q -m gpu tests/unit/test_plan.py tests/unit/test_unpadded.py >"$out/tests.txt" 2>&1 ;;
  peft)
    shape=$1
    shift
    per_rank=()
    [ "$shape" = llama-3-8b ] && per_rank=(--peft-cells per-rank)
    python benchmarks/bench_peft_cells.py --shape "$shape" --device cuda --ranks 1,2,4,8,16,32,64 --seeds 0,1,2 \
      --steps 30 --batch-size 4 --max-length 512 --unpadded --checkpointing off,on "${per_rank[@]}" \
      --json "$out/peft-$shape.json" "$@" >"$out/peft-$shape.txt" 2>"$out/peft-$shape.err" ;;
  profile)
    shape=$1
    shift
    python benchmarks/profile_decoder_step.py --shape "$shape" --batch-size 4 --max-length 512 "$@" \
      >"$out/profile-$shape.txt" 2>"$out/profile-$shape.err" ;;
  *) echo "unknown stage $stage: tests, peft or profile" >&2; exit 2 ;;
esac
echo "$stage exit $?" >>"$out/rc.txt"
