#!/usr/bin/env bash
# Every train-step figure issue 19 asks for, on one GPU, in under 8 minutes: GPT-2 small at 1,024 tokens and BERT-base
# MLM at 128 tokens in bf16 with cuDNN attention, against transformers PyTorch (SDPA, bf16 autocast) eager and
# torch.compile'd in the same run, MFU against the GPU's dense bf16 peak, a jax.profiler trace, and a short batch
# sweep of each.
#
#   bash bench/gpu.sh [--install] [--cpu-check]
#
# Runs with $PYTHON, else the repository's .venv/bin/python, else `python`; that Python needs jax with its CUDA
# plugin, torch with CUDA, transformers and zoo's dependencies. Nothing is installed unless --install says so (then
# pip installs jax[cuda12] and zoo's test extra from the network). --cpu-check runs the same stages on tiny models on
# the CPU, to check the script where there is no GPU. Each stage has its own timeout (their sum, with 5 s each to
# stop, is under 8 minutes, and a stage cut short keeps the rows it printed); a stage that fails or times out is
# reported and the next one runs; the exit status says whether any failed. PROFILE_DIR says where the trace goes.
set -euo pipefail
cd "$(dirname "$0")/.."

install=0
cpu_check=0
for flag in "$@"; do
  case $flag in
    --install) install=1 ;;
    --cpu-check) cpu_check=1 ;;
    *) echo "bench/gpu.sh: unknown flag $flag (known: --install, --cpu-check)" >&2; exit 2 ;;
  esac
done

if [[ -n ${PYTHON:-} ]]; then python=$PYTHON
elif [[ -x .venv/bin/python ]]; then python=.venv/bin/python
else python=python
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
profile_dir=${PROFILE_DIR:-${TMPDIR:-/tmp}/zoo_train_step_profile}

if (( install )); then
  "$python" -m pip install "jax[cuda12]" -e ".[test]"
fi

if (( cpu_check )); then
  # tiny models, short rows, float32 and XLA attention: what the CPU runs in seconds
  common=(--tiny --dtype float32 --attention-kernel xla --steps 2 --no-unrolled)
  gpt2=(--length 32 --batch 2)
  bert=(--length 16 --batch 2)
  gpt2_sweep=(--sweep-min 1 --sweep-max 2)
  bert_sweep=(--sweep-min 1 --sweep-max 2)
  compile_peer=()  # torch.compile on a CPU needs a C++ toolchain and minutes: the GPU run checks it
else
  common=(--dtype bfloat16 --attention-kernel cudnn --steps 10 --no-unrolled)
  gpt2=(--length 1024 --batch 8)
  bert=(--length 128 --batch 64)
  gpt2_sweep=(--sweep-min 8 --sweep-max 32)
  bert_sweep=(--sweep-min 64 --sweep-max 512)
  compile_peer=(--torch-compile)
fi

# JAX takes 75% of GPU memory at start-up by default; the stages with a PyTorch peer leave it half, the sweeps 90%.
with_peer_memory=${WITH_PEER_MEM_FRACTION:-0.45}
sweep_memory=${SWEEP_MEM_FRACTION:-0.9}

failed=()
stage() {  # stage NAME SECONDS COMMAND...: run it under a timeout, note a failure and go on
  local name=$1 limit=$2
  shift 2
  echo
  echo "== $name (at most ${limit}s, $(date -u +%H:%M:%S) UTC)"
  local status=0
  timeout --kill-after=5 "$limit" "$@" || status=$?
  if (( status == 124 || status == 137 )); then failed+=("$name (timed out after ${limit}s)")
  elif (( status != 0 )); then failed+=("$name (exit $status)")
  fi
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "bench/gpu.sh on $(hostname) at $(date -u '+%Y-%m-%d %H:%M:%S') UTC, commit $commit"
versions='import jax, torch, transformers
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "| transformers", transformers.__version__)'
stage "device" 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null ||
  echo "no nvidia-smi"
  "$0" -c "$1"' "$python" "$versions"
bench=("$python" bench/train_step.py "${common[@]}")
stage "GPT-2 small, zoo vs torch eager and compiled" 170 env XLA_PYTHON_CLIENT_MEM_FRACTION="$with_peer_memory" \
  "${bench[@]}" --models gpt2 "${gpt2[@]}" "${compile_peer[@]}" --profile "$profile_dir"
stage "BERT-base MLM, zoo vs torch eager and compiled" 100 env XLA_PYTHON_CLIENT_MEM_FRACTION="$with_peer_memory" \
  "${bench[@]}" --models bert "${bert[@]}" "${compile_peer[@]}"
stage "GPT-2 small batch sweep" 80 env XLA_PYTHON_CLIENT_MEM_FRACTION="$sweep_memory" \
  "${bench[@]}" --models gpt2 "${gpt2[@]}" --no-torch --sweep "${gpt2_sweep[@]}"
stage "BERT-base MLM batch sweep" 70 env XLA_PYTHON_CLIENT_MEM_FRACTION="$sweep_memory" \
  "${bench[@]}" --models bert "${bert[@]}" --no-torch --sweep "${bert_sweep[@]}"

echo
echo "finished at $(date -u '+%Y-%m-%d %H:%M:%S') UTC; jax.profiler trace of GPT-2 in $profile_dir"
if (( ${#failed[@]} )); then
  printf 'failed stage: %s\n' "${failed[@]}"
  exit 1
fi
