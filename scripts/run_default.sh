#!/usr/bin/env bash
# The main job on the bundled default task, from a fresh machine:
#   set up -> prepare data -> embeddings -> train the head -> evaluate -> convert to TF-Lite
#   -> run the edge pipeline (what the Pi runs) on the held-out fold-5 clips, LEDs on mock pins.
# Outputs: data/ (prepared audio, metadata), model/ (head, yamnet.tflite, head.tflite, manifest.json,
# reports and plots). Extra arguments go to `oido-train all` (e.g. --epochs 30).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if [ "${OIDO_SKIP_SETUP:-0}" != "1" ]; then
    bash scripts/setup.sh
fi

start=$(date +%s)
echo "== 1/3 workstation: prepare, embed, train, evaluate"
"$PYTHON" -m train all "$@"
echo "== 2/3 convert: quantized TF-Lite models + manifest + parity report"
"$PYTHON" -m convert
echo "== 3/3 edge: replay the held-out clips through the Pi's pipeline (mock GPIO)"
"$PYTHON" scripts/replay_test_clips.py --model-dir model --data-dir data
echo "== done in $(( $(date +%s) - start )) s: see model/ for the models, reports and plots"
