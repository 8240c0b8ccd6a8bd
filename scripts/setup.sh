#!/usr/bin/env bash
# Installs everything Oído needs on a workstation (Debian/Ubuntu): system packages and the
# project with its workstation, edge and test extras. Idempotent; run as root or with sudo.
# The project goes into $PYTHON if set, else into this checkout's .venv if there is one, else into
# python3; where python3 is externally managed (PEP 668: Debian 12, Ubuntu 23.04 and later refuse
# `pip install` outside a venv), setup makes .venv from it. run_default.sh and test.sh choose the
# same way.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

APT_PACKAGES="pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins alsa-utils libsndfile1 espeak-ng sox shellcheck logrotate systemd qemu-user-static python3-venv python3-pip strace"
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

repo="$(pwd)"
# Checked from / so the working directory cannot stand in for the install: the project must be
# installed from THIS checkout (an editable install of another clone would run that clone's code).
installed_here='import os, sys, tensorflow, ai_edge_litert, soxr, sounddevice, gpiozero, hypothesis, pytest, edge.params
sys.exit(os.path.dirname(os.path.dirname(os.path.realpath(edge.params.__file__))) != os.path.realpath(sys.argv[1]))'
is_installed_here() { (cd / && "$1" -c "$installed_here" "$repo") >/dev/null 2>&1; }
# PEP 668: a Python outside a venv whose stdlib holds EXTERNALLY-MANAGED refuses pip installs.
is_externally_managed() {
    local stdlib
    stdlib="$("$1" -c 'import sys, sysconfig; print(sysconfig.get_path("stdlib") if sys.prefix == sys.base_prefix else "")')"
    [ -n "$stdlib" ] && [ -e "$stdlib/EXTERNALLY-MANAGED" ]
}

venv="$repo/.venv"
if [ -n "${PYTHON:-}" ]; then
    why="\$PYTHON"
elif [ -x "$venv/bin/python" ]; then
    PYTHON="$venv/bin/python"
    why="this checkout's venv"
else
    PYTHON=python3
    why="python3 on PATH"
    # An externally managed python3 that already has the project (installed with pip's
    # --break-system-packages, say) is used as it is.
    if is_externally_managed python3 && ! is_installed_here python3; then
        echo "setup: python3 is externally managed (PEP 668): making the venv $venv"
        if ! python3 -m venv "$venv"; then
            rm -rf "$venv"
            echo "setup: python3 -m venv failed; install python3-venv (apt-get install python3-venv) and rerun" >&2
            exit 1
        fi
        PYTHON="$venv/bin/python"
        "$PYTHON" -m pip install -q --upgrade pip
        why="a venv, since python3 is externally managed"
    fi
fi
if ! is_installed_here "$PYTHON"; then
    if is_externally_managed "$PYTHON"; then
        echo "setup: $PYTHON is externally managed (PEP 668) and pip cannot install into it:" \
            "unset PYTHON (setup then makes the venv $venv), or point PYTHON at a venv's python" >&2
        exit 1
    fi
    echo "setup: installing the project with its train, edge and test extras"
    "$PYTHON" -m pip install -q -e '.[train,edge,test]'
fi
echo "setup: ready: Python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') at $PYTHON ($why)"
