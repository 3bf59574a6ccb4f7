#!/usr/bin/env bash
# GPU smoke test, on a machine with an NVIDIA GPU and no Docker: the PyTorch CUDA
# path with the tiny model, a ~10 s measurement window, and checks that the energy
# came from NVML (energy > 0, power samples present). Prints the key numbers.
#
#   scripts/gpu-smoke.sh
#
#   LEM_SMOKE_VENV=.venv-gpu      venv to use; made (and the package installed with its
#                                 pytorch extra) when missing or without torch; a venv whose
#                                 torch cannot use CUDA is refused, never modified
#   LEM_SMOKE_SYSTEM_SITE=0       1: the new venv sees the system's packages (a preinstalled
#                                 CUDA torch is then reused instead of downloaded)
#   LEM_SMOKE_WHEELHOUSE=         install offline from this wheel directory
#   LEM_SMOKE_WINDOW_S=10         minimum measurement window
#   LEM_SMOKE_WORK=               where model, config and result go (default: a temp dir)
#   PYTHON=python3                interpreter that makes the venv
set -euo pipefail

say() { echo "gpu-smoke: $*" >&2; }
die() {
    say "FAIL: $*"
    exit 1
}

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${LEM_SMOKE_VENV:-$REPO/.venv-gpu}"
WINDOW_S="${LEM_SMOKE_WINDOW_S:-10}"
WORK="${LEM_SMOKE_WORK:-$(mktemp -d -t lem-gpu-smoke.XXXXXX)}"
PY="$VENV/bin/python"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L >&2
else
    say "nvidia-smi not found; relying on NVML"
fi

venv_ready() {
    [ -x "$PY" ] && "$PY" -c 'import llenergymeasure, pynvml, torch; assert torch.cuda.is_available()' \
        2>/dev/null
}

install_package() {
    local site_flag=()
    [ "${LEM_SMOKE_SYSTEM_SITE:-0}" = 1 ] && site_flag=(--system-site-packages)
    [ -x "$PY" ] || "${PYTHON:-python3}" -m venv "${site_flag[@]}" "$VENV"
    local source_flags=()
    if [ -n "${LEM_SMOKE_WHEELHOUSE:-}" ]; then
        source_flags=(--no-index --find-links "$LEM_SMOKE_WHEELHOUSE")
    fi
    say "installing the package with its pytorch extra into $VENV"
    "$PY" -m pip install --quiet "${source_flags[@]}" -e "${REPO}[pytorch]"
}

torch_without_cuda() {
    [ -x "$PY" ] && "$PY" -c 'import torch' 2>/dev/null && ! venv_ready
}

# An existing venv whose torch cannot use CUDA is left alone (it may be a CPU venv in use).
if torch_without_cuda; then
    die "torch in $VENV cannot use CUDA (a CPU build, or no driver visible); set LEM_SMOKE_VENV"
fi
venv_ready || install_package
venv_ready || die "torch in $VENV cannot use CUDA (a CPU build, or no driver visible)"
LEM="$VENV/bin/lem"

say "work dir $WORK"
"$LEM" health --json >"$WORK/health.json"
"$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["nvml"], r; print(f"gpu-smoke: NVML sees {len(r[\"gpus\"])} GPU(s)")' \
    "$WORK/health.json" >&2 || die "lem health reports no NVML: $(cat "$WORK/health.json")"

"$LEM" model tiny --out "$WORK/tiny" >&2

cat >"$WORK/config.json" <<EOF
{
  "config_name": "gpu-smoke",
  "backend": "pytorch",
  "model": {"path": "$WORK/tiny"},
  "precision": "float16",
  "decoder": {"max_new_tokens": 32, "temperature": 0.0},
  "dataset": {"name": "builtin:short-prompts", "num_prompts": 16},
  "measurement": {"warmup_prompts": 4, "min_window_seconds": $WINDOW_S, "baseline_seconds": 5},
  "pytorch": {"batch_size": 4}
}
EOF

"$LEM" experiment "$WORK/config.json" --out "$WORK/result" --baseline-cache "$WORK/baseline.json" >&2

"$PY" - "$WORK/result/result.json" <<'EOF'
import json
import sys

result = json.load(open(sys.argv[1]))
energy, power, thermal = result["energy"], result["power"], result["thermal"]
env, timing, tokens = result["environment"], result["timing"], result["tokens"]
print(f"GPU            {env['gpu_count']}x {env['gpu_name']}  driver {env['driver_version']}  "
      f"CUDA {env['cuda_version']}  power limit {env['power_limit_w']} W")
print(f"versions       {env['versions']}")
print(f"window         {timing['window_seconds']:.2f} s, {timing['window_repeats']} repeats, "
      f"{tokens['requests']} requests, {tokens['output_tokens']} output tokens")
print(f"energy         {energy['gpu_energy_j']} J ({energy['source']}), per GPU "
      f"{energy['gpu_energy_j_per_gpu']}, CPU {energy['cpu_energy_j']} J")
print(f"idle baseline  {energy['idle_baseline_power_w']} W -> adjusted "
      f"{energy['idle_adjusted_energy_j']} J")
print(f"per token      {energy['j_per_output_token']} J raw, "
      f"{energy['adjusted_j_per_output_token']} J adjusted")
print(f"power          mean {power['mean_w']} W, peak {power['peak_w']} W, "
      f"{len(power['samples_w'])} samples every {power['sample_interval_ms']} ms")
print(f"temperature    start {thermal['temperature_start_c']} C, max "
      f"{thermal['temperature_max_c']} C, reasons {thermal['throttle_reasons']}")
print(f"latency        mean {result['latency']['mean']} s, TTFT mean {result['ttft']['mean']} s")
print(f"warnings       {result['warnings']}")

failures = []
if env["device"] != "cuda":
    failures.append(f"device is {env['device']!r}, not 'cuda'")
if energy["source"] != "nvml":
    failures.append(f"energy source is {energy['source']!r}, not 'nvml'")
if not (energy["gpu_energy_j"] or 0) > 0:
    failures.append(f"GPU energy is {energy['gpu_energy_j']!r}, not > 0")
if not power["samples_w"]:
    failures.append("no power samples")
if timing["window_seconds"] < float(result["config"]["measurement"]["min_window_seconds"]):
    failures.append("window shorter than min_window_seconds")
for failure in failures:
    print(f"gpu-smoke: FAIL: {failure}", file=sys.stderr)
if failures:
    sys.exit(1)
print("gpu-smoke: PASS")
EOF
