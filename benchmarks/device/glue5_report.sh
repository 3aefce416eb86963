#!/usr/bin/env bash
# Every analysis of the five GLUE sweeps (lowrank-lab report), on the device machine's CPUs, after
# glue5.sh: five reports side by side; the analysis tables come back as Parquet (zstd).
#   bash benchmarks/device/glue5_report.sh RUNS_DIR OUT_DIR
set -u
runs=$1 out=$2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=3 MKL_NUM_THREADS=3
start=$(date +%s)
for task in sst2 rte mrpc cola stsb; do
  ( timeout "${REPORT_TIMEOUT:-480}" python -m lowrank_lab report "$runs/glue-$task" --base .devcarry/minilm-fp16 \
      >"/tmp/report-$task.txt" 2>&1; echo "$task report rc=$? seconds=$(( $(date +%s) - start ))" >>"$out/rc.txt" ) &
done
wait
tail -n 30 /tmp/report-*.txt >"$out/reports.txt"
python benchmarks/device/to_parquet.py "$runs" >>"$out/rc.txt" 2>&1
tar cf "$out/analysis.tar" -C "$runs" --exclude='*.csv' --exclude='*.pdf' --exclude='*.tex' $(cd "$runs" && ls -d */analysis) 
split -b 15M -d "$out/analysis.tar" "$out/analysis.tar.part" && rm "$out/analysis.tar"
ls -la "$out" >>"$out/rc.txt"
