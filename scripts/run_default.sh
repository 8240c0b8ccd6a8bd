#!/usr/bin/env bash
# The main job on the bundled default task, from a fresh machine:
#   set up -> prepare data -> embeddings -> the tutorial head on its four classes (clip accuracy),
#   converted to TF-Lite with its parity report -> the open-set head (+ an ESC-10 `other` class, augmentation, thresholds calibrated out of fold) -> convert to TF-Lite
#   -> run the edge pipeline (what the Pi runs) on the held-out fold-5 clips, LEDs on mock pins,
#   and on a stream of them (event recall, latency, false events per hour).
# Outputs: data/ (prepared audio, metadata), model/ (the shipped open-set head, yamnet.tflite,
# head.tflite, manifest.json), model/tutorial/ (the tutorial head, its evaluation and its TF-Lite
# export with parity.md: the default task's quantized accuracy), reports/
# (plots, reports/openset/: calibration and stream figures). Extra arguments go to `oido-train all`
# (e.g. --epochs 30).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${OIDO_SKIP_SETUP:-0}" != "1" ]; then
    bash scripts/setup.sh
fi
# The Python setup.sh installed into: $PYTHON if set, else this checkout's .venv (setup.sh makes it
# where python3 is externally managed, PEP 668), else python3.
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON="$PWD/.venv/bin/python"; else PYTHON=python3; fi
fi

start=$(date +%s)
echo "== 1/5 workstation: the tutorial's task (4 classes): prepare, embed, train, evaluate, convert (model/tutorial)"
"$PYTHON" -m train all --background none --model-dir model/tutorial "$@"
"$PYTHON" -m convert export --model-dir model/tutorial
echo "== 2/5 open-set head: + an 'other' class of ESC-10 clips, augmentation, thresholds calibrated out of fold (model)"
"$PYTHON" -m train prepare
"$PYTHON" -m train fit-openset --model-dir model
echo "== 3/5 convert: quantized TF-Lite models + manifest + parity report"
"$PYTHON" -m convert
echo "== 4/5 edge: replay the held-out clips through the Pi's pipeline (mock GPIO)"
"$PYTHON" scripts/replay_test_clips.py --model-dir model --data-dir data
echo "== 5/5 edge: the held-out clips as streams through the exported models (event level)"
"$PYTHON" -m train evaluate-stream --model-dir model --no-audio
echo "== done in $(( $(date +%s) - start )) s: see model/ for the models, reports/ for the figures"
