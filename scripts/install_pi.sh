#!/usr/bin/env bash
# Install Oído on a Raspberry Pi (Raspberry Pi OS bookworm) as a systemd service.
#
#   sudo scripts/install_pi.sh [--model-dir DIR] [--extra edge|edge-legacy] [--no-start] [--root DIR]
#                              [--python PYTHON]
#
# Run from the project checkout, with the exported model in ./model (manifest.json,
# yamnet.tflite, head.tflite; see `oido-convert`). It:
#   1. installs the system packages (python3-venv, python3-lgpio, libportaudio2, libsndfile1);
#   2. creates the unprivileged user `oido` (groups gpio, audio);
#   3. creates /opt/oido/venv (--system-site-packages, for the apt lgpio) and pip installs .[edge]
#      (.[edge-legacy] = tflite-runtime 2.14 + numpy<2, for images where ai-edge-litert has no wheel;
#      the other runtime is removed from the venv, so the one asked for is the one that runs);
#      --python: the interpreter the venv is made from (default python3, the system's);
#   4. installs scripts/oido.toml as /etc/oido/oido.toml unless that file exists;
#   5. installs /etc/logrotate.d/oido-edge (the event log rotates weekly or at 5 MB, 12 kept);
#   6. copies the model to /opt/oido/model.new and runs `oido-edge listen --check` on it as that
#      user: the config, the new model, the pins, the microphone. If the check fails it stops there
#      and exits 1: the previous model stays in /opt/oido/model and the service is left alone;
#   7. swaps the new model in as /opt/oido/model;
#   8. installs and enables oido-edge.service, and (re)starts it unless --no-start.
# Safe to run again: it updates the code and the model and keeps the configuration.
# It refuses a 32-bit system (the kernel, dpkg's architecture or --python's) before it changes anything.
# --root DIR stages steps 3-8 under DIR instead of /, runs the check as the current user, and skips
# the system packages, the user and systemctl; it needs no root (the tests check the installer
# this way).
set -euo pipefail

root=""
service_user=oido
unit=oido-edge.service
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model_dir="$repo/model"
extra=edge
start=yes
python=python3
arguments="$*"

# Option $1 takes a value, $2: a usage error when it is missing (the end of the line, or the next option).
needs_value() {
    if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#-}" != "$2" ]; then
        echo "install_pi.sh: $1 needs a value (see --help)" >&2
        exit 2
    fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --model-dir)
            needs_value "$@"
            model_dir="$2"
            shift 2
            ;;
        --extra)
            needs_value "$@"
            extra="$2"
            shift 2
            ;;
        --no-start)
            start=no
            shift
            ;;
        --python)
            needs_value "$@"
            python="$2"
            shift 2
            ;;
        --root)
            needs_value "$@"
            root="$(mkdir -p "$2" && cd "$2" && pwd)"
            start=no
            shift 2
            ;;
        -h | --help)
            # The header comment above, up to the first line that is not a comment.
            awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "install_pi.sh: unknown option $1 (see --help)" >&2
            exit 2
            ;;
    esac
done

prefix="$root/opt/oido"
config_dir="$root/etc/oido"
# No TF-Lite runtime publishes 32-bit ARM wheels. The kernel alone does not tell: a Pi 4 or 5 boots
# a 64-bit kernel (aarch64) under 32-bit Raspberry Pi OS too, so dpkg's architecture (the
# userland's) and the venv's Python are asked as well. Tests fake each with a command on PATH
# (uname, dpkg) or --python.
unsupported() {
    echo "install_pi.sh: $1 is not supported: the TF-Lite runtimes (ai-edge-litert, tflite-runtime)" \
        "publish wheels for 64-bit ARM (aarch64) and x86_64 only; install Raspberry Pi OS (64-bit)" \
        "(Pi 3, 4, 5, Zero 2 W)" >&2
    exit 1
}
case "$(uname -m)" in
    aarch64 | x86_64) ;;
    *) unsupported "$(uname -m)" ;;
esac
if command -v dpkg >/dev/null 2>&1; then
    userland="$(dpkg --print-architecture)"
    case "$userland" in
        arm64 | amd64) ;;
        *) unsupported "$userland (dpkg --print-architecture; uname -m says $(uname -m))" ;;
    esac
fi
if ! pointer_bits="$("$python" -c 'import struct; print(struct.calcsize("P") * 8)' 2>/dev/null)"; then
    echo "install_pi.sh: cannot run $python (--python: the Python the venv is made from)" >&2
    exit 1
fi
if [ "$pointer_bits" != 64 ]; then
    unsupported "a ${pointer_bits}-bit Python ($python)"
fi
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install_pi.sh: run as root: sudo $0 $arguments" >&2
    exit 1
fi
for file in manifest.json yamnet.tflite head.tflite; do
    if [ ! -f "$model_dir/$file" ]; then
        echo "install_pi.sh: $model_dir/$file is missing; export the model first (oido-convert) or pass --model-dir" >&2
        exit 1
    fi
done

if [ -n "$root" ]; then
    echo "== staging under $root: no system packages, no user $service_user, no systemctl"
else
    echo "== system packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv python3-lgpio libportaudio2 libsndfile1 logrotate

    echo "== user $service_user"
    for group in gpio audio; do
        getent group "$group" >/dev/null || groupadd --system "$group"
    done
    if ! id "$service_user" >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/oido --no-create-home \
            --shell /usr/sbin/nologin --groups gpio,audio "$service_user"
    else
        usermod --append --groups gpio,audio "$service_user"
    fi
fi

echo "== $prefix/venv"
install -d -m 0755 "$prefix"
if [ ! -x "$prefix/venv/bin/python" ]; then
    # System site packages: python3-lgpio comes from apt (it needs the matching liblgpio).
    "$python" -m venv --system-site-packages "$prefix/venv"
fi
"$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
"$prefix/venv/bin/python" -m pip install --quiet "${repo}[${extra}]"
# Oído takes ai-edge-litert when both runtimes import: a switch of --extra removes the other one.
case "$extra" in
    edge-legacy) other_runtime=ai-edge-litert ;;
    *) other_runtime=tflite-runtime ;;
esac
if "$prefix/venv/bin/python" -m pip show --quiet "$other_runtime" >/dev/null 2>&1; then
    "$prefix/venv/bin/python" -m pip uninstall --quiet --yes "$other_runtime" || true
fi

echo "== configuration"
install -d -m 0755 "$config_dir"
if [ -e "$config_dir/oido.toml" ]; then
    echo "keeping the existing $config_dir/oido.toml (the new example is $repo/scripts/oido.toml)"
else
    install -m 0644 "$repo/scripts/oido.toml" "$config_dir/oido.toml"
fi

echo "== event log rotation"
install -d -m 0755 "$root/etc/logrotate.d"
install -m 0644 "$repo/scripts/oido-edge.logrotate" "$root/etc/logrotate.d/oido-edge"

echo "== model -> $prefix/model.new"
if [ ! -d "$prefix/model" ] && [ -d "$prefix/model.old" ]; then
    mv "$prefix/model.old" "$prefix/model"  # an earlier run stopped mid-swap: its previous model
fi
rm -rf "$prefix/model.new" "$prefix/model.old"
install -d -m 0755 "$prefix/model.new"
cp -rL "$model_dir"/. "$prefix/model.new/"  # -L: real files, even if model/ links to assets
rm -rf "$prefix/model.new"/.export-*  # the staging folder of an export that was killed, if any
chmod -R a+rX "$prefix/model.new"

# The new model is checked against the kept config before it replaces the one in use: a service
# keeps its model in memory, so a bad swap would show only at the next reboot, as a service that
# cannot start.
echo "== check: oido-edge listen --check (the config, the new model, the pins, the microphone)"
# --wait-for-input as in the unit: a microphone not plugged in yet is reported, not a failure.
check=("$prefix/venv/bin/oido-edge" listen --check --wait-for-input --config "$config_dir/oido.toml"
    --model-dir "$prefix/model.new")
if [ -z "$root" ]; then
    check=(runuser -u "$service_user" -- "${check[@]}")  # as the service will run
fi
if ! "${check[@]}"; then
    rm -rf "$prefix/model.new"
    if [ -d "$prefix/model" ]; then
        kept="the previous model is still installed in $prefix/model and the service was left alone"
    else
        kept="no model was installed and the service was not installed"
    fi
    echo "install_pi.sh: the check above failed (the new model from $model_dir with $config_dir/oido.toml):" \
        "$kept. Fix what it names, then run this installer again." >&2
    exit 1
fi

echo "== model -> $prefix/model"
if [ -d "$prefix/model" ]; then
    mv "$prefix/model" "$prefix/model.old"
fi
mv "$prefix/model.new" "$prefix/model"
rm -rf "$prefix/model.old"

echo "== service"
install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$repo/scripts/$unit" "$root/etc/systemd/system/$unit"
if [ -n "$root" ]; then
    echo "staged under $root; on the Pi: systemctl enable --now $unit"
    exit 0
fi
systemctl daemon-reload
systemctl enable "$unit"
if [ "$start" = yes ]; then
    # Manual starts count against the unit's StartLimitBurst too: a service that gave up on a bad
    # config (start-limit-hit) would refuse this restart for the rest of StartLimitIntervalSec.
    systemctl reset-failed "$unit" || true
    systemctl restart "$unit"
    echo "started: journalctl -u $unit -f; what it heard: sudo $prefix/venv/bin/oido-edge events;" \
        "wiring: systemctl stop $unit && sudo $prefix/venv/bin/oido-edge leds"
else
    echo "installed; start it with: systemctl start $unit"
fi
