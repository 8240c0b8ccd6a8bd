#!/usr/bin/env bash
# Install Oído on a Raspberry Pi (Raspberry Pi OS bookworm) as a systemd service.
#
#   sudo scripts/install_pi.sh [--model-dir DIR] [--extra edge|edge-legacy] [--no-start] [--root DIR]
#                              [--python PYTHON]
#
# Run from the project checkout, with the exported model in ./model (manifest.json,
# yamnet.tflite, head.tflite; see `oido-convert`). It:
#   1. installs the system packages (python3-venv, python3-lgpio, libportaudio2, libsndfile1);
#   2. creates /opt/oido/venv (--system-site-packages, for the apt lgpio) and pip installs .[edge]
#      (.[edge-legacy] = tflite-runtime 2.14 + numpy<2, for images where ai-edge-litert has no wheel;
#      the other runtime is removed from the venv, so the one asked for is the one that runs);
#      --python: the interpreter the venv is made from (default python3, the system's);
#   3. copies the model to /opt/oido/model;
#   4. installs scripts/oido.toml as /etc/oido/oido.toml unless that file exists;
#   5. creates the unprivileged user `oido` (groups gpio, audio);
#   6. installs /etc/logrotate.d/oido-edge (the event log rotates weekly or at 5 MB, 12 kept);
#   7. runs `oido-edge listen --check` as that user: the config, the model, the pins, the microphone;
#   8. installs and enables oido-edge.service, and (re)starts it unless --no-start or the check failed.
# Safe to run again: it updates the code and the model and keeps the configuration.
# --root DIR stages steps 2-4, 6 and the unit file under DIR instead of /, runs step 7 as the
# current user, and skips the system packages, the user and systemctl; it needs no root (the
# tests check the installer this way).
set -euo pipefail

root=""
service_user=oido
unit=oido-edge.service
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model_dir="$repo/model"
extra=edge
start=yes
python=python3

while [ $# -gt 0 ]; do
    case "$1" in
        --model-dir)
            model_dir="$2"
            shift 2
            ;;
        --extra)
            extra="$2"
            shift 2
            ;;
        --no-start)
            start=no
            shift
            ;;
        --python)
            python="$2"
            shift 2
            ;;
        --root)
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
case "$(uname -m)" in
    aarch64 | x86_64) ;;
    *)
        echo "install_pi.sh: $(uname -m) is not supported: the TF-Lite runtimes (ai-edge-litert, tflite-runtime)" \
            "publish wheels for 64-bit ARM (aarch64) and x86_64 only; install Raspberry Pi OS (64-bit)" \
            "(Pi 3, 4, 5, Zero 2 W)" >&2
        exit 1
        ;;
esac
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install_pi.sh: run as root: sudo $0 $*" >&2
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

echo "== model -> $prefix/model"
rm -rf "$prefix/model.new"
install -d -m 0755 "$prefix/model.new"
cp -rL "$model_dir"/. "$prefix/model.new/"  # -L: real files, even if model/ links to assets
rm -rf "$prefix/model.old"
if [ -d "$prefix/model" ]; then
    mv "$prefix/model" "$prefix/model.old"
fi
mv "$prefix/model.new" "$prefix/model"
rm -rf "$prefix/model.old"
chmod -R a+rX "$prefix/model"

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

echo "== check: oido-edge listen --check (the config, the model, the pins, the microphone)"
check=("$prefix/venv/bin/oido-edge" listen --check --config "$config_dir/oido.toml" --model-dir "$prefix/model")
if [ -z "$root" ]; then
    check=(runuser -u "$service_user" -- "${check[@]}")  # as the service will run
fi
checked=yes
if ! "${check[@]}"; then
    checked=no
    echo "install_pi.sh: the check above failed; fix it (the config is $config_dir/oido.toml), then:" \
        "systemctl restart $unit" >&2
fi

echo "== service"
install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$repo/scripts/$unit" "$root/etc/systemd/system/$unit"
if [ -n "$root" ]; then
    echo "staged under $root; on the Pi: systemctl enable --now $unit"
    exit 0
fi
systemctl daemon-reload
systemctl enable "$unit"
if [ "$start" = yes ] && [ "$checked" = yes ]; then
    systemctl restart "$unit"
    echo "started: journalctl -u $unit -f; what it heard: sudo $prefix/venv/bin/oido-edge events;" \
        "wiring: systemctl stop $unit && sudo $prefix/venv/bin/oido-edge leds"
elif [ "$checked" = no ]; then
    # Not restarted: a running service keeps listening with the model it loaded until the fix.
    echo "installed and enabled, not (re)started: the check failed; after the fix: systemctl restart $unit"
else
    echo "installed; start it with: systemctl start $unit"
fi
