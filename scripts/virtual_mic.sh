#!/usr/bin/env bash
# A virtual microphone for tests and CI: a private PulseAudio server with a null sink whose
# monitor is the default source. Whatever is played into the sink (paplay --device=oido_null)
# is what PortAudio's ALSA "pulse" device captures.
#
#   eval "$(scripts/virtual_mic.sh start)"   # idempotent; prints `export PULSE_SERVER=...`
#   paplay --device=oido_null clip.wav &
#   python -m edge listen --device pulse --rate 48000 --duration 8
#   scripts/virtual_mic.sh stop              # stops only the server this script started
#
# Works as root too (PulseAudio then warns that it is "not intended to be run as root", which
# is harmless for a throw-away server): it runs in per-user mode with its own runtime directory
# and an anonymous unix socket, so no system-wide daemon, D-Bus or login session is needed.
# Environment: OIDO_PULSE_DIR (runtime directory, default /tmp/oido-pulse-$UID; one holding spaces
# is reached through a link /tmp/oido-pulse-$UID-<checksum>, as PulseAudio's server address cannot hold them),
# OIDO_PULSE_SINK (sink name, default oido_null), OIDO_PULSE_SHARED=1 (every local user can reach
# the socket, for a test that captures as another user: the installer's check as `oido`).
set -euo pipefail

runtime_dir="${OIDO_PULSE_DIR:-/tmp/oido-pulse-$(id -u)}"
sink="${OIDO_PULSE_SINK:-oido_null}"
shared="${OIDO_PULSE_SHARED:-0}"
# PulseAudio splits a server address at whitespace and has no quoting for it: a runtime directory
# holding any is reached through a space-free link to it.
reach_dir="$runtime_dir"
case "$runtime_dir" in
    *[[:space:]]*) reach_dir="/tmp/oido-pulse-$(id -u)-$(printf '%s' "$runtime_dir" | cksum | cut -d' ' -f1)" ;;
esac
if [ "$shared" = 1 ]; then
    socket="$reach_dir/shared/native"  # PulseAudio keeps its own pulse/ owner-only
else
    socket="$reach_dir/pulse/native"
fi
server="unix:$socket"
pidfile="$runtime_dir/pulse/pid"

usage() {
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
}

running() {
    pactl --server="$server" info >/dev/null 2>&1
}

print_env() {  # for eval: values shell-quoted (a runtime directory may hold spaces)
    printf 'export PULSE_SERVER=%q\n' "$server"
    printf 'export OIDO_PULSE_SINK=%q\n' "$sink"
}

start() {
    for tool in pulseaudio pactl; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "virtual_mic: $tool not found; install pulseaudio and pulseaudio-utils" >&2
            exit 1
        fi
    done
    mkdir -p "$runtime_dir"
    if [ "$shared" = 1 ]; then
        chmod 755 "$runtime_dir"
        install -d -m 755 "$runtime_dir/shared"
    else
        chmod 700 "$runtime_dir"
    fi
    if [ "$reach_dir" != "$runtime_dir" ] && ! ln -sfnT "$runtime_dir" "$reach_dir" 2>/dev/null; then
        echo "virtual_mic: cannot make the link $reach_dir -> $runtime_dir (PulseAudio's address cannot hold" \
             "spaces): remove $reach_dir, or set OIDO_PULSE_DIR to a path without spaces" >&2
        exit 1
    fi
    if ! running; then
        # -n: no default.pa (no hardware modules); the protocol module gives us a socket we know.
        XDG_RUNTIME_DIR="$runtime_dir" pulseaudio \
            --daemonize=yes --exit-idle-time=-1 --use-pid-file=yes --disallow-exit=no \
            -n --load="module-native-protocol-unix socket=\"$socket\" auth-anonymous=1" \
            --log-target=file:"$runtime_dir/pulse.log" 2>>"$runtime_dir/pulse.log" || true
        for _ in $(seq 50); do
            running && break
            sleep 0.1
        done
        if ! running; then
            echo "virtual_mic: PulseAudio did not start; see $runtime_dir/pulse.log" >&2
            exit 1
        fi
    fi
    if ! pactl --server="$server" list short sinks | cut -f2 | grep -qx "$sink"; then
        pactl --server="$server" load-module module-null-sink \
            sink_name="$sink" sink_properties=device.description=Oido_virtual_microphone >/dev/null
    fi
    pactl --server="$server" set-default-sink "$sink"
    pactl --server="$server" set-default-source "$sink.monitor"
    print_env
}

stop() {
    if running; then
        # Ask the server itself to exit: never kill a PulseAudio this script did not start.
        pactl --server="$server" exit >/dev/null 2>&1 || true
        for _ in $(seq 50); do
            running || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
    if [ "$reach_dir" != "$runtime_dir" ] && [ -L "$reach_dir" ]; then
        rm -f "$reach_dir"
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status)
        if running; then
            echo "running: $server (sink $sink)"
        else
            echo "not running"
            exit 1
        fi
        ;;
    env) print_env ;;
    *) usage ;;
esac
