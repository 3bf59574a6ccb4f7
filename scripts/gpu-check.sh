#!/usr/bin/env bash
# Check one GPU host, offline, in under 10 minutes; print ONE JSON report on stdout and
# write it to WORK/report.json (progress on stderr, logs in WORK/logs). See docs/gpu.md.
#
#   scripts/gpu-check.sh                         check this machine
#   scripts/gpu-check.sh --bundle DIR [--python 3.12] [--glibc 2.28]
#                                                on a connected machine: write DIR, the
#                                                check for an offline GPU machine (DIR/run.sh)
#
# The check first prepares (venv, package, tiny model: no GPU needed), then asks NVML
# for GPUs (none: verdict no_gpu), then runs on the tiny model:
#   pytorch  the PyTorch backend in a venv that sees this machine's CUDA torch;
#   image    the same in the built image, through compose and its `lem worker`, when
#            Docker and the image are here (otherwise skipped, with the reason);
#   vllm     the vLLM backend, when `import vllm` works in the venv (otherwise skipped).
# Each result is checked by src/llenergymeasure/gpucheck.py: ran on CUDA, NVML energy
# counter within 15 % of the integrated power samples, idle baseline above 10 W and
# below the power limit, TTFT and ITL counted.
#
# Exit status: 0 pass (every run ran and passed), 2 partial (nothing failed, something
# was skipped), 1 fail, 3 no GPU on this machine (after the preparation passed).
#
#   PYTHON=python3                 the Python whose torch, transformers and nvidia-ml-py are used
#   LEM_GPU_CHECK_VENV=.venv-gpu   venv made from it with --system-site-packages (reused)
#   LEM_GPU_CHECK_WHEELHOUSE=      offline: install from this wheelhouse (a bundle's, or
#                                  `scripts/build-wheelhouse.sh gpu-check DIR`)
#   LEM_GPU_CHECK_IMAGE=lem-pytorch:<version>   the image checked through compose
#   LEM_GPU_CHECK_WINDOW_S=20      minimum measurement window of each experiment
#   LEM_GPU_CHECK_BUDGET_S=480     no step starts, or runs on, past this many seconds
#   LEM_GPU_CHECK_WORK=gpu-check-out   models, configs, results, logs, report.json
set -uo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"

say() { echo "gpu-check: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# The newest pip wheel of a wheelhouse (a wheelhouse that only grows may hold several).
newest_pip_wheel() {
    find "$1" -maxdepth 1 -name 'pip-*.whl' | sort -V | tail -n 1
}

# DIR PYTHON GLIBC: the project, a gpu-check wheelhouse resolved for that target (from a
# cache under wheelhouse/, so a second bundle downloads nothing) and DIR/run.sh.
make_bundle() {
    local dir="$1" python="$2" glibc="$3"
    [[ "$python" =~ ^3\.[0-9]+$ ]] || die "--python expects X.Y (e.g. 3.12), got '$python'"
    [[ "$glibc" =~ ^2\.[0-9]+$ ]] || die "--glibc expects 2.N (e.g. 2.28), got '$glibc'"
    mkdir -p "$dir" && dir="$(cd "$dir" && pwd)" || die "cannot create $dir"
    local cache="${LEM_WHEELHOUSE_DIR:-$REPO/wheelhouse}/gpu-check-py$python-glibc$glibc"
    local target=(env LEM_WHEEL_PYTHON="$python" LEM_WHEEL_GLIBC="$glibc")
    "${target[@]}" "$REPO/scripts/build-wheelhouse.sh" gpu-check "$cache" ||
        die "the wheelhouse for Python $python, glibc $glibc could not be built"
    rm -rf "$dir/project" "$dir/wheelhouse" "$dir/out" "$dir/venv"
    mkdir -p "$dir/project" "$dir/wheelhouse"
    tar -C "$REPO" --exclude=__pycache__ --exclude='*.egg-info' -c \
        pyproject.toml README.md src scripts docker docs/gpu.md | tar -C "$dir/project" -x
    # Only what resolves for the target, copied from the cache: one pip, no stale wheels.
    cp -r "$cache/lem" "$dir/wheelhouse/lem"
    "${target[@]}" LEM_WHEEL_FIND_LINKS="$cache/deps" \
        "$REPO/scripts/build-wheelhouse.sh" gpu-check "$dir/wheelhouse" ||
        die "selecting the bundle's wheels from $cache failed"
    rm -f "$dir/wheelhouse/.lock"
    echo "$python $glibc" >"$dir/wheelhouse/target"
    write_run_sh >"$dir/run.sh" && chmod +x "$dir/run.sh"
    say "bundle for Python $python, glibc >= $glibc in $dir ($(du -sh "$dir" | cut -f1)):"
    say "copy it to the GPU machine and run $(basename "$dir")/run.sh there"
}

write_run_sh() {
    cat <<'RUN'
#!/usr/bin/env bash
# The GPU check of llenergymeasure, offline (made by scripts/gpu-check.sh --bundle).
# Run it on the GPU machine; it needs no network and installs nothing outside this
# directory. The verdict: out/report.json (also on stdout); logs: out/logs/.
#
#   [PYTHON=/path/to/python3] [LEM_GPU_CHECK_BUDGET_S=480] ./run.sh
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
export LEM_GPU_CHECK_WHEELHOUSE="$HERE/wheelhouse"
export LEM_GPU_CHECK_VENV="$HERE/venv"
export LEM_GPU_CHECK_WORK="$HERE/out"
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
exec "$HERE/project/scripts/gpu-check.sh"
RUN
}

if [ "${1:-}" = --bundle ]; then
    BUNDLE="${2:?--bundle needs a directory}"
    shift 2
    TARGET_PYTHON=3.12
    TARGET_GLIBC=2.28
    while [ $# -gt 0 ]; do
        case "$1" in
        --python) TARGET_PYTHON="${2:?--python needs X.Y}" && shift 2 ;;
        --glibc) TARGET_GLIBC="${2:?--glibc needs 2.N}" && shift 2 ;;
        *) die "unknown argument '$1' (see the top of $0)" ;;
        esac
    done
    make_bundle "$BUNDLE" "$TARGET_PYTHON" "$TARGET_GLIBC"
    exit 0
elif [ $# -gt 0 ]; then
    die "unknown argument '$1' (see the top of $0)"
fi

PY="${PYTHON:-python3}"
VENV="${LEM_GPU_CHECK_VENV:-$REPO/.venv-gpu}"
VPY="$VENV/bin/python"
WHEELHOUSE="${LEM_GPU_CHECK_WHEELHOUSE:-}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n 1)"
IMAGE="${LEM_GPU_CHECK_IMAGE:-lem-pytorch:$VERSION}"
WINDOW_S="${LEM_GPU_CHECK_WINDOW_S:-20}"
BUDGET_S="${LEM_GPU_CHECK_BUDGET_S:-480}"
WORK="${LEM_GPU_CHECK_WORK:-$REPO/gpu-check-out}"
# The project name is in the rendered file (gpucheck.COMPOSE_PROJECT).
COMPOSE=(docker compose --file "$WORK/compose.yml")
# A previous run's results and logs never mix into this one's.
rm -rf "$WORK/logs" "$WORK/models" "$WORK/state" "$WORK/probe.json" "$WORK/report.json"
mkdir -p "$WORK/logs" "$WORK/models" "$WORK/state"
# The tiny model is local: never reach for the hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
REPORT_ARGS=()

# The checks' module, by any Python, before (or without) the package's dependencies.
checker() {
    local python="$1"
    shift
    PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" "$python" -m llenergymeasure.gpucheck "$@"
}

# The last lines of a log, on one line, for the report.
log_tail() { tail -n "${2:-4}" "$1" 2>/dev/null | tr -s '\n\t' '  ' | cut -c1-600; }

remaining() { echo $((BUDGET_S - SECONDS)); }

# Print the report (the only stdout), keep it as WORK/report.json, exit with its status.
finish() {
    [ -s "$WORK/probe.json" ] || echo '{"error": "the GPU probe did not run"}' >"$WORK/probe.json"
    checker "$PY" report --probe "$WORK/probe.json" --work "$WORK" "${REPORT_ARGS[@]}" \
        >"$WORK/report.json"
    local status=$?
    cat "$WORK/report.json"
    say "report $WORK/report.json, logs $WORK/logs"
    exit "$status"
}

skip() { REPORT_ARGS+=(--skip "$1=$2") && say "$1: skipped: $2"; }
error() { REPORT_ARGS+=(--error "$1=$2") && say "$1: FAILED: $2"; }
prepared() { REPORT_ARGS+=(--prepared "$1=$2") && say "$1: ok: $2"; }

require_python() {
    command -v "$PY" >/dev/null && return
    echo '{"report": "lem gpu-check", "format": 1, "status": "fail", "reason": "no Python: set PYTHON"}' |
        tee "$WORK/report.json"
    exit 1
}

# NVML's view; without a GPU the run ends here, with verdict no_gpu.
probe_gpus() {
    checker "$PY" probe >"$WORK/probe.json" 2>"$WORK/logs/probe.log" ||
        echo '{"error": "the GPU probe failed: see logs/probe.log in the work dir"}' >"$WORK/probe.json"
    "$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1])).get("gpus") else 1)' \
        "$WORK/probe.json" || finish
    say "NVML sees: $(cat "$WORK/probe.json")"
}

# A venv that sees $PY's packages: its system site-packages, and through a .pth file
# also $PY's own when $PY is itself a venv (or conda env), which --system-site-packages
# alone would skip.
make_venv() {
    [ -x "$VPY" ] || "$PY" -m venv "$@" --system-site-packages "$VENV" || return 1
    local own
    own="$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || return 1
    "$PY" -c 'import site; print("\n".join(site.getsitepackages()))' >"$own/lem-gpu-check-base.pth"
}

# A bundle's wheels fit one Python version: say so before pip says "no matching distribution".
check_wheelhouse_target() {
    [ -f "$WHEELHOUSE/target" ] || return 0
    local wanted have
    read -r wanted _ <"$WHEELHOUSE/target"
    have="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    [ "$wanted" = "$have" ] && return
    echo "the wheelhouse $WHEELHOUSE is for Python $wanted, $PY is $have:" \
        "make the bundle with --python $have (or set PYTHON)"
    return 1
}

# The venv: this machine's torch/transformers/nvidia-ml-py, the rest from the
# wheelhouse (offline) or the index. The wheelhouse's base-requirements.txt is
# checked against what the machine has, never downloaded.
setup_venv() {
    if [ -n "$WHEELHOUSE" ]; then
        check_wheelhouse_target || return 1
        local pip_wheel
        pip_wheel="$(newest_pip_wheel "$WHEELHOUSE/deps")"
        [ -n "$pip_wheel" ] || { echo "no pip wheel in $WHEELHOUSE/deps" && return 1; }
        make_venv --without-pip || return 1
        local pip=("$VPY" "$pip_wheel/pip" install --no-cache-dir --no-index)
        "${pip[@]}" --no-deps -r "$WHEELHOUSE/deps/base-requirements.txt" &&
            "${pip[@]}" --find-links "$WHEELHOUSE/deps" -r "$WHEELHOUSE/deps/requirements.txt" \
                -c "$WHEELHOUSE/deps/constraints.txt" &&
            "${pip[@]}" --no-deps --force-reinstall "$WHEELHOUSE"/lem/llenergymeasure-*.whl
    else
        make_venv || return 1
        "$VPY" -m pip install "$REPO[pytorch]"
    fi
}

# Everything that needs no GPU: a failure here is the gate's own, so it is `fail`.
prepare() {
    say "setting up $VENV"
    if ! setup_venv >"$WORK/logs/setup.log" 2>&1; then
        error venv "venv setup failed (log $WORK/logs/setup.log): $(log_tail "$WORK/logs/setup.log")"
        finish
    fi
    prepared venv "$VENV from ${WHEELHOUSE:-the package index}"
    if ! "$VENV/bin/lem" --version >"$WORK/logs/lem.log" 2>&1; then
        error lem "the lem CLI does not start in $VENV: $(log_tail "$WORK/logs/lem.log")"
        finish
    fi
    prepared lem "$(log_tail "$WORK/logs/lem.log" 1)"
    if ! "$VENV/bin/lem" model tiny --out "$WORK/models/tiny" >"$WORK/logs/tiny.log" 2>&1; then
        error tiny_model "lem model tiny failed: $(log_tail "$WORK/logs/tiny.log")"
        finish
    fi
    prepared tiny_model "$WORK/models/tiny"
}

check_cuda_torch() {
    if ! "$VPY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA"' >"$WORK/logs/torch.log" 2>&1; then
        error pytorch "torch in $VENV cannot use CUDA (a CPU build? PYTHON must be the Python with CUDA torch): $(log_tail "$WORK/logs/torch.log" 1)"
        finish
    fi
}
# LABEL BACKEND MODEL_PATH_SEEN_BY_LEM COMMAND...: write the config, run COMMAND with the
# config, result dir and baseline cache appended (paths under $WORK/state, or as mounted).
run_experiment() {
    local label="$1" backend="$2" model="$3" prefix="$4"
    shift 4
    local left
    left="$(remaining)"
    if [ "$left" -lt 60 ]; then
        skip "$label" "time budget of ${BUDGET_S} s spent"
        return
    fi
    checker "$VPY" config "$backend" "$model" "$WINDOW_S" >"$WORK/state/$label.json"
    say "$label: running (up to $left s)"
    timeout "$left" "$@" "$prefix/$label.json" --out "$prefix/$label" \
        --baseline-cache "$prefix/baseline-$label.json" >"$WORK/logs/$label.log" 2>&1
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        error "$label" "lem experiment exited $rc (log $WORK/logs/$label.log): $(log_tail "$WORK/logs/$label.log")"
    else
        REPORT_ARGS+=(--run "$label=$WORK/state/$label/result.json")
    fi
}

run_in_venv() {
    run_experiment pytorch pytorch "$WORK/models/tiny" "$WORK/state" \
        "$VENV/bin/lem" experiment --no-worker
}

# Why the image check cannot run here, or nothing.
image_unavailable() {
    command -v docker >/dev/null || { echo "docker not found" && return; }
    docker info >/dev/null 2>&1 || { echo "the Docker daemon does not answer (docker info)" && return; }
    docker compose version >/dev/null 2>&1 || { echo "docker compose (v2) is missing" && return; }
    docker image inspect "$IMAGE" >/dev/null 2>&1 ||
        echo "image $IMAGE is not here: build it with scripts/build-images.sh --backend pytorch, or set LEM_GPU_CHECK_IMAGE"
}

run_in_image() {
    local why
    why="$(image_unavailable)"
    [ "$(remaining)" -ge 120 ] || why="time budget of ${BUDGET_S} s spent"
    if [ -n "$why" ]; then
        skip image "$why"
        return
    fi
    checker "$VPY" render-compose "$REPO/docker/compose.yml.j2" "$WORK" "$IMAGE" \
        >"$WORK/compose.yml" || { error image "rendering docker/compose.yml.j2 failed" && return; }
    say "image: compose up ($IMAGE)"
    trap compose_down EXIT
    if ! timeout "$(remaining)" "${COMPOSE[@]}" up --detach --wait >"$WORK/logs/compose-up.log" 2>&1; then
        error image "compose up --wait failed: $(log_tail "$WORK/logs/compose-up.log")"
        "${COMPOSE[@]}" logs >"$WORK/logs/compose-service.log" 2>&1
        compose_down
        return
    fi
    run_experiment image pytorch /models/tiny /lem/state \
        "${COMPOSE[@]}" exec -T pytorch lem experiment --require-worker
    "${COMPOSE[@]}" logs >"$WORK/logs/compose-service.log" 2>&1
    compose_down
}

compose_down() {
    "${COMPOSE[@]}" down --timeout 30 >>"$WORK/logs/compose-down.log" 2>&1 || true
    trap - EXIT
}

run_vllm() {
    if ! "$VPY" -c 'import vllm' >"$WORK/logs/vllm-import.log" 2>&1; then
        skip vllm "vllm is not importable in $VENV: $(log_tail "$WORK/logs/vllm-import.log" 1)"
        return
    fi
    run_experiment vllm vllm "$WORK/models/tiny" "$WORK/state" "$VENV/bin/lem" experiment --no-worker
}

# GPU knobs (docs/knobs.md): lock GPU 0's SM clock, read back, reset, read back. Needs root;
# without it the step is reported as skipped with NVML's reason.
run_knobs() {
    if checker "$VPY" knobs --state-file "$WORK/state/gpu-knobs.json" >"$WORK/knobs.json" 2>"$WORK/logs/knobs.log"; then
        REPORT_ARGS+=(--knobs "$WORK/knobs.json")
    else
        error knobs "the knob step crashed (log $WORK/logs/knobs.log): $(log_tail "$WORK/logs/knobs.log")"
    fi
}

say "work dir $WORK"
require_python
prepare
probe_gpus
check_cuda_torch
run_knobs
run_in_venv
run_in_image
run_vllm
finish
