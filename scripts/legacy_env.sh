#!/usr/bin/env bash
# Run pytest in a TensorFlow-free TF-Lite runtime environment, the way the Pi runs the models.
#
#   scripts/legacy_env.sh [--venv DIR] [--python PY] [--] [pytest args...]
#       tflite-runtime 2.14 + numpy<2 (older Pi images, Python 3.11); default venv .venv-legacy
#   scripts/legacy_env.sh --edge [--venv DIR] [--] [pytest args...]
#       ai-edge-litert + numpy 2 (current Pi images); default venv .venv-edge
#   scripts/edge_env.sh [...]   is the same as  scripts/legacy_env.sh --edge [...]
#
# The venv gets the runtime, numpy, soundfile, gpiozero, pytest and hypothesis, and the project
# itself without its dependencies (so TensorFlow never comes in); then pytest runs with the given
# arguments (default: tests/test_convert.py -x -q). The venv is reused when it already has the
# runtime; delete it to rebuild. Export-side tests skip there (no TensorFlow); the runtime-parity
# test loads model/*.tflite with that runtime and checks its decisions against model/golden.json.
#
# Examples:
#   scripts/legacy_env.sh                                   # tests/test_convert.py in tflite-runtime 2.14
#   scripts/legacy_env.sh tests/test_convert.py -k golden -x -q
#   scripts/edge_env.sh -x -q tests/test_convert.py
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
flavour=legacy
venv=""
python=""
# The value after flag $1, or a usage error naming the flag (`set -u` would only say "$2: unbound variable").
value() {
    if [[ $# -lt 2 || -z "$2" || "$2" == --* ]]; then
        echo "$0: $1 needs a value, e.g. $1 ${3:-DIR}" >&2
        exit 2
    fi
    printf '%s' "$2"
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --edge) flavour=edge; shift ;;
        --legacy) flavour=legacy; shift ;;
        --venv) venv="$(value "$1" "${2-}" .venv-mine)"; shift 2 ;;
        --python) python="$(value "$1" "${2-}" python3.11)"; shift 2 ;;
        --) shift; break ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) break ;;
    esac
done

# The venv's python runs after `cd "$repo"`: a relative --venv is taken from here, where it was given.
if [[ -n "$venv" && "$venv" != /* ]]; then
    venv="$PWD/$venv"
fi

if [[ "$flavour" == legacy ]]; then
    venv="${venv:-$repo/.venv-legacy}"
    python="${python:-python3.11}"
    runtime=(tflite-runtime==2.14.0 'numpy<2')
    probe="import tflite_runtime.interpreter"
else
    venv="${venv:-$repo/.venv-edge}"
    python="${python:-python3}"
    runtime=(ai-edge-litert 'numpy>=2')
    probe="import ai_edge_litert.interpreter"
fi

if ! command -v "$python" >/dev/null 2>&1; then
    echo "$0: $python not found; install it or pass --python PATH" >&2
    exit 2
fi

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "$probe" >/dev/null 2>&1; then
    echo "creating $venv ($flavour runtime: ${runtime[*]})" >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "${runtime[@]}" soundfile gpiozero pytest hypothesis
    "$venv/bin/python" -m pip install --quiet --no-deps -e "$repo"
fi

if "$venv/bin/python" -c "import tensorflow" >/dev/null 2>&1; then
    echo "$0: $venv has tensorflow installed; it must not (remove the venv and rerun)" >&2
    exit 2
fi

cd "$repo"
if [[ $# -eq 0 ]]; then
    set -- tests/test_convert.py -x -q
fi
exec "$venv/bin/python" -m pytest "$@"
