#!/usr/bin/env bash
# The test command. On a fresh machine it installs what it needs (scripts/setup.sh), builds the
# default models with the real pipeline when model/ has none, then runs:
#   1. every test in the workstation environment (TensorFlow, ai-edge-litert, virtual microphone);
#   2. the edge and convert tests where the Pi's software is all there is:
#      ai-edge-litert + numpy 2 without TensorFlow, and tflite-runtime 2.14 + numpy<2.
# Extra arguments go to the first pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# The Python setup.sh installed into: $PYTHON if set, else this checkout's .venv (setup.sh makes it
# where python3 is externally managed, PEP 668), else python3.
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON="$PWD/.venv/bin/python"; else PYTHON=python3; fi
fi

if [ ! -f model/manifest.json ]; then
    echo "== building the default models (prepare, train, convert) for the model tests"
    OIDO_SKIP_SETUP=1 bash scripts/run_default.sh
fi

echo "== workstation environment"
"$PYTHON" -m pytest -q "$@"

EDGE_TESTS=(tests/test_edge_framing.py tests/test_edge_resample.py tests/test_edge_audio.py
            tests/test_edge_detect.py tests/test_edge_manifest.py tests/test_edge_pipeline.py
            tests/test_edge_config.py tests/test_edge_leds.py tests/test_edge_cli.py
            tests/test_edge_no_tensorflow.py tests/test_convert.py)
echo "== Pi environment: ai-edge-litert + numpy 2, no TensorFlow"
bash scripts/edge_env.sh -q "${EDGE_TESTS[@]}"
echo "== Pi environment: tflite-runtime 2.14 + numpy<2, no TensorFlow"
bash scripts/legacy_env.sh -q "${EDGE_TESTS[@]}"
