#!/usr/bin/env bash
# The one GPU measurement run of issue 13, made to fit a single `run` call on a lent H100/H200:
#
#     bash benchmarks/gpu_device.sh          (from the repo root there; carry .whl)
#     GPU_DEVICE_DRYRUN=1 bash benchmarks/gpu_device.sh    (here: the same steps, tiny models, CPU)
#     GPU_DEVICE_STEPS="probe4 build quantize check train8" GPU_CHECK_ONLY="quantize 4bit,vae,float16,plain 384" \
#         bash benchmarks/gpu_device.sh      (a follow-up call: only the named steps)
#
# Steps (GPU_DEVICE_STEPS, default "gpu_full train check train8"): gpu_full = the full-size benchmark
# (it keeps the model folder); build = only build that folder; train / train8 = 20 LoRA steps with
# AdamW / 8-bit AdamW on it; quantize = full-size `generate --quantize 8bit|4bit` timings; check =
# gpu_check.py on the demo model (GPU_CHECK_ONLY: comma-separated --only prefixes); probe4 =
# bnb4_probe.py and the demo's `--quantize 4bit` with CUDA_LAUNCH_BLOCKING=1 and its traceback;
# attention = attention_probe.py (issue 27 item 7: each backend's probe, eager and compiled, and
# what `auto` picks); offload = the `train` step with --gradient-checkpointing-offload (issue 26:
# its peak memory beside train_adamw's). Run on an H200 on 2026-12-04 (benchmarks/README.md):
#     GPU_DEVICE_STEPS="attention gpu_full train offload" bash benchmarks/gpu_device.sh   (483 s)
#     GPU_DEVICE_DEADLINE=225 GPU_DEVICE_STEPS=gpu_full \
#         GPU_FULL_ARGS="--roles stock,llmdit --no-backends --budget 175" bash benchmarks/gpu_device.sh  (168 s)
# Next on a GPU: the same gpu_full call plus the compile and fp8 roles and --profile (default
# `generate` was 1.01x stock after the parallel PNG encoder; --profile prints where one more image's
# host and kernel time goes, for stock and llmdit, to find the rest; fp8 times `--quantize fp8`,
# eager and compiled, the candidate for the best configuration, with its PSNR against bf16):
#     GPU_DEVICE_DEADLINE=420 GPU_DEVICE_STEPS=gpu_full \
#         GPU_FULL_ARGS="--roles stock,llmdit,compile,fp8 --no-backends --profile" \
#         bash benchmarks/gpu_device.sh
#
# Logs and results go to $OUT as summary.md and logs.tgz (env.log, gpu_full.log, gpu_full.json,
# train_adamw.log, gpu_check.log, train_adamw8bit.log, summary.md). Every step runs under `timeout`,
# capped so the whole script ends by GPU_DEVICE_DEADLINE seconds (default 510, inside the 600 s of
# one call); a failed or skipped step is reported and the next one runs.
#
# Measured on an H200 (2026-11-27): wheels 24 s, gpu_full 202 s (build 54, stock 35, llmdit 58,
# compile 54), LoRA training 52 s, and gpu_check ~20-30 s PER CHECK (each a fresh CUDA process), so
# gpu_check got through 9 of its 20 checks before the deadline: run the rest in a second call with
# `python3 benchmarks/gpu_check.py --device cuda --only "quantize 4bit" --only vae --only float16`.
# The follow-up (this session's two calls, H200): probe4 45+27 s, check with 3-4 checks 64-110 s,
# build 45-62 s, train8 51 s, quantize 46-53 s.
# The estimates first written here:
#   wheels + versions                                         ~15 s
#   gpu_full.py: build and save the 19 GiB model to /dev/shm  ~45 s
#                stock ZImagePipeline, 1 + 2 images            ~35 s
#                llmdit generate: sdpa, stages, 3 backends     ~55 s
#                llmdit generate --compile (compiling: 1-2 min) ~70-150 s
#   training dataset (4 images, 1024^2)                        ~2 s
#   llmdit train, LoRA, 20 steps, AdamW (caches captions and
#                latents with the text encoder, fp32 DiT)      ~60 s
#   gpu_check.py on the demo model (20 processes)              ~130 s
#   llmdit train, 20 steps, 8-bit AdamW (cache reused)         ~40 s, only if time is left
#   summary                                                    ~1 s
# about 400-510 s in all; gpu_check.py and the 8-bit run come last because a cut loses least there
# (gpu_check prints a line per check as it goes).
set -u -o pipefail
START=$SECONDS
DRY=${GPU_DEVICE_DRYRUN:-0}
OUT=${OUT:-/tmp/gpu_device_out}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_device.XXXXXX)

if [ "$DRY" = 1 ]; then
    # This machine's Python is 3.11: check that the cp312 wheel set installs, then use the venv's
    # own pydantic-core (same version) with the other wheels.
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site312" \
        --python-version 3.12 --only-binary=:all: .whl/*.whl && echo "wheel set installs for Python 3.12"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-dry \
        $(ls .whl/*.whl | grep -v pydantic_core) && export PYTHONPATH=/tmp/site-dry:$PWD
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    DEADLINE=${GPU_DEVICE_DEADLINE:-1500}
    TINY=(--tiny); DEVICE=cpu; RES=64
else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD || echo "## WHEEL INSTALL FAILED: diffusers, pydantic, typer ... missing"
    DEADLINE=${GPU_DEVICE_DEADLINE:-510}
    TINY=(); DEVICE=cuda; RES=1024
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
STATUS=()
STEPS=" ${GPU_DEVICE_STEPS:-gpu_full train check train8} "
want() { [[ "$STEPS" == *" $1 "* ]]; }

# run_step NAME SECONDS CMD...: CMD under `timeout`, at most SECONDS and never past the deadline
# (15 s kept for the summary); output shown and saved to $OUT/NAME.log.
run_step() {
    local name=$1 want=$2
    shift 2
    local left=$((DEADLINE - (SECONDS - START) - 15))
    local limit=$((want < left ? want : left))
    if [ "$limit" -lt 30 ]; then
        echo "## $name: skipped, ${left} s left"
        STATUS+=("$name: skipped (out of time)")
        return 1
    fi
    echo "## $name: limit ${limit} s, at $((SECONDS - START)) s"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    STATUS+=("$name: exit $rc after $((SECONDS - t0)) s")
    return "$rc"
}

train_step() {  # train_step NAME OPTIMIZER SECONDS [ARGS...]: 20 LoRA steps at $RES^2 on the full-size folder
    local name=$1 opt=$2 want=$3
    shift 3
    run_step "train_$name" "$want" python3 benchmarks/gpu_full.py --role train --result "$WORK/train_$name.json" -- \
        --model "$FOLDER" --dataset "$WORK/data" --resolution "$RES" --max-steps 20 --mixed-precision bf16 \
        --gradient-checkpointing --method lora --batch-size 1 --optimizer "$opt" --output "$WORK/run_$name" "$@"
}

{
    nvidia-smi -L || echo "no nvidia-smi"
    python3 - <<'EOF'
import importlib, platform
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")
for name in ("diffusers", "transformers", "accelerate", "peft", "typer", "pydantic", "safetensors", "gguf",
             "bitsandbytes"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')} ({mod.__file__})")
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
EOF
    df -h /dev/shm /tmp 2>/dev/null
    free -g 2>/dev/null
} 2>&1 | tee "$OUT/env.log"

gpu_check_step() {  # all 20 checks take ~8 min on a GPU, so a short GPU_CHECK_ONLY list runs first
    local only=() prefixes=() p
    IFS=',' read -r -a prefixes <<<"${GPU_CHECK_ONLY:-}"
    for p in "${prefixes[@]}"; do only+=(--only "$p"); done
    run_step gpu_check 200 python3 benchmarks/gpu_check.py --device "$DEVICE" --out /tmp/gpu_check_out "${only[@]}"
}

if want probe4; then
    run_step bnb4_probe 90 python3 benchmarks/bnb4_probe.py
    run_step demo_4bit 60 env CUDA_LAUNCH_BLOCKING=1 LLMDIT_DEBUG=1 python3 -m llmdit_cli generate \
        "a red circle on a blue background" --model demo --device "$DEVICE" --quantize 4bit -o "$WORK/demo4.png"
fi

want attention && run_step attention 120 python3 benchmarks/attention_probe.py --device "$DEVICE" --cli
[ -n "${GPU_CHECK_ONLY:-}" ] && want check && gpu_check_step

if want gpu_full; then
    # GPU_FULL_ARGS: more gpu_full.py options, e.g. "--roles stock,llmdit --no-backends"
    read -r -a FULL_ARGS <<<"${GPU_FULL_ARGS:-}"
    run_step gpu_full 360 python3 benchmarks/gpu_full.py "${TINY[@]}" --keep --repeats 2 --budget 350 \
        --out "$OUT/gpu_full.json" "${FULL_ARGS[@]}"
    FOLDER=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["folder"])' "$OUT/gpu_full.json" 2>/dev/null)
    PROMPT=""
elif want build || want train || want train8 || want offload || want quantize; then
    FOLDER=$WORK/z-image-turbo-random
    [ "$DRY" = 1 ] || FOLDER=/dev/shm/llmdit-gpu-full/z-image-turbo-random
    run_step build 150 python3 benchmarks/gpu_full.py "${TINY[@]}" --role build --folder "$FOLDER" \
        --result "$OUT/build.json"
    PROMPT=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["prompt"])' "$OUT/build.json" 2>/dev/null)
fi
HAVE_FOLDER=0
[ -n "${FOLDER:-}" ] && [ -f "$FOLDER/model_index.json" ] && HAVE_FOLDER=1

if [ "$HAVE_FOLDER" = 1 ] && { want train || want train8 || want offload; }; then
    python3 benchmarks/gpu_full.py --role dataset --dataset "$WORK/data" --resolution "$RES" --count 4 \
        2>&1 | tee -a "$OUT/env.log"
fi
if [ "$HAVE_FOLDER" = 1 ] && want train; then
    train_step adamw adamw 150
elif want train; then
    STATUS+=("training: skipped (no model folder)")
fi

if [ "$HAVE_FOLDER" = 1 ] && want offload; then  # issue 26: peak memory beside train_adamw's
    train_step offload adamw 150 --gradient-checkpointing-offload
fi

[ -z "${GPU_CHECK_ONLY:-}" ] && want check && gpu_check_step

if [ "$HAVE_FOLDER" = 1 ] && want train8; then
    if python3 -c "import bitsandbytes" 2>/dev/null; then
        train_step adamw8bit adamw8bit 120
    else
        STATUS+=("train_adamw8bit: skipped (bitsandbytes not importable)")
    fi
fi
if [ "$HAVE_FOLDER" = 1 ] && want quantize && [ -n "$PROMPT" ]; then
    mkdir -p "$WORK/quantize"
    run_step quantize 200 python3 benchmarks/gpu_full.py "${TINY[@]}" --role quantize --folder "$FOLDER" \
        --prompt "$PROMPT" --work "$WORK/quantize" --repeats 1 --result "$OUT/quantize.json"
fi

[ "$HAVE_FOLDER" = 1 ] && rm -rf "$FOLDER" && rmdir "$(dirname "$FOLDER")" 2>/dev/null

echo
echo "## steps"
printf '%s\n' "${STATUS[@]}"
echo "total $((SECONDS - START)) s"
echo
RESULT=$OUT/gpu_full.json
[ -f "$RESULT" ] || RESULT=$OUT/quantize.json
python3 benchmarks/gpu_full.py --role summary --result "$RESULT" --train "$WORK/train_adamw.json" \
    --train "$WORK/train_adamw8bit.json" --train "$WORK/train_offload.json" --check-log "$OUT/gpu_check.log" \
    2>&1 | tee "$OUT/summary.md"
# At most 8 files come back from a device call: the logs and JSON travel as one archive.
(cd "$OUT" && tar czf logs.tgz --remove-files -- *.log *.json 2>/dev/null)
ls -la "$OUT"
