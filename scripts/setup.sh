#!/usr/bin/env bash
# Installs everything Oído needs on a workstation (Debian/Ubuntu): system packages and the
# project with its workstation, edge and test extras. Idempotent; run as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

APT_PACKAGES="pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins alsa-utils libsndfile1 espeak-ng sox shellcheck logrotate systemd qemu-user-static python3-venv"
missing=""
for p in $APT_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
# Checked from / so the working directory cannot stand in for the install: the project must be
# installed from THIS checkout (an editable install of another clone would run that clone's code).
installed_here='import os, sys, tensorflow, ai_edge_litert, soxr, sounddevice, gpiozero, hypothesis, pytest, edge.params
sys.exit(os.path.dirname(os.path.dirname(os.path.realpath(edge.params.__file__))) != os.path.realpath(sys.argv[1]))'
repo="$(pwd)"
if ! (cd / && "$PYTHON" -c "$installed_here" "$repo") >/dev/null 2>&1; then
    echo "setup: installing the project with its train, edge and test extras"
    "$PYTHON" -m pip install -q -e '.[train,edge,test]'
fi
echo "setup: ready"
