#!/usr/bin/env bash
# ai-edge-litert + numpy 2, no TensorFlow: the same as `scripts/legacy_env.sh --edge` (see there).
exec bash "$(dirname "${BASH_SOURCE[0]}")/legacy_env.sh" --edge "$@"
