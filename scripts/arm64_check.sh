#!/usr/bin/env bash
# The exported model on a Raspberry Pi's CPU, emulated: replays model/golden.json
# (`python -m convert check`) under qemu-aarch64 with Debian bookworm's arm64 Python 3.11 (what
# Raspberry Pi OS bookworm runs) and the aarch64 wheels of the Pi's TF-Lite runtime, so the ARM
# kernels (XNNPACK's NEON paths, with or without int8 dot products) decide every golden clip.
#
#   bash scripts/arm64_check.sh [--cpu pi4|pi5|both] [--extra edge|edge-legacy] [--limit N]
#                               [--model-dir DIR] [--data-dir DIR] [-- EDGE_ARGS...]
#
#   --cpu    pi4: Cortex-A72 (no int8 dot product); pi5: Cortex-A76 (SDOT); both (default)
#   --extra  edge: ai-edge-litert (the version installed here, else the newest) + numpy 2 (default);
#            edge-legacy: tflite-runtime 2.14 + numpy<2
#   --limit  check only the first N golden clips, N >= 1 (emulated, 104 clips take about 5 minutes per core)
#   --model-dir, --data-dir  the export and the prepared data (default: model/ and data/ of this repository)
#   -- ARGS  then run `python -m edge ARGS` there too, e.g.
#            -- replay clip.wav --mock-gpio --config scripts/oido.toml --model-dir model
#
# Needs qemu-user-static (apt), apt-get and pip on a Debian host, and the package registries. The
# arm64 Python (from Debian's arm64 packages, fetched with a private apt state: the host's
# architectures are not touched) and the wheels are cached in ${XDG_CACHE_HOME:-~/.cache}/oido/arm64.
# Emulated timing says nothing about a Pi's speed: this checks decisions, not speed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/oido/arm64"
cpus=both
extra=edge
limit=""
model_dir="$repo/model"
data_dir="$repo/data"
# The value after flag $1, or a usage error naming the flag (`set -u` would only say "$2: unbound variable").
value() {
    if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then
        echo "arm64_check.sh: $1 needs a value (see --help)" >&2
        exit 2
    fi
    printf '%s' "$2"
}
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) cpus="$(value "$@")"; shift 2 ;;
        --extra) extra="$(value "$@")"; shift 2 ;;
        --limit)
            limit="$(value "$@")"; shift 2
            case "$limit" in
                '' | *[!0-9]* | 0*)
                    echo "arm64_check.sh: --limit $limit: give a whole number of clips from 1 up" >&2
                    exit 2
                    ;;
            esac
            ;;
        --model-dir) model_dir="$(value "$@")"; shift 2 ;;
        --data-dir) data_dir="$(value "$@")"; shift 2 ;;
        --) shift; break ;;
        -h | --help)
            awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *) echo "arm64_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$cpus" in pi4 | pi5) ;; both) cpus="pi4 pi5" ;; *) echo "arm64_check.sh: --cpu pi4, pi5 or both" >&2; exit 2 ;; esac
case "$extra" in edge | edge-legacy) ;; *) echo "arm64_check.sh: --extra edge or edge-legacy" >&2; exit 2 ;; esac
if ! command -v qemu-aarch64-static >/dev/null; then
    echo "arm64_check.sh: qemu-aarch64-static not found: apt-get install qemu-user-static" >&2
    exit 1
fi
if [ ! -f "$model_dir/manifest.json" ] || [ ! -f "$model_dir/golden.json" ]; then
    echo "arm64_check.sh: $model_dir has no manifest.json and golden.json: export the model first (oido-convert)" >&2
    exit 1
fi

# 1. Debian bookworm's arm64 Python 3.11, unpacked (no maintainer scripts run: none are needed to run python).
root="$cache/root"
if [ ! -x "$root/usr/bin/python3.11" ]; then
    echo "== arm64 Python 3.11 from Debian bookworm -> $root"
    if [ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ] || ! command -v dpkg-deb >/dev/null; then
        echo "arm64_check.sh: needs apt, dpkg-deb and Debian's archive keyring (apt-get install debian-archive-keyring)" >&2
        exit 1
    fi
    apt_dir="$cache/apt"
    rm -rf "$apt_dir" "$root.tmp"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/debs" "$root.tmp"
    : >"$apt_dir/status"
    cat >"$apt_dir/sources.list" <<'EOF'
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
EOF
    apt_options=(-o "APT::Architecture=arm64" -o "APT::Architectures=arm64" -o "Dir::State=$apt_dir"
                 -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
                 -o "Dir::Cache=$apt_dir" -o "Dir::Cache::archives=$apt_dir/archives"
                 -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
                 -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
    apt-get "${apt_options[@]}" -qq update
    # python3.11 and what it links against (apt-cache depends --recurse, without the arch-all tools).
    packages=(python3.11 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 gcc-12-base libgcc-s1
              libstdc++6 zlib1g libbz2-1.0 liblzma5 libzstd1 libmd0 libexpat1 libffi8 libssl3 libsqlite3-0 libuuid1
              libncursesw6 libtinfo6 libreadline8 libdb5.3 libcrypt1 libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3
              libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2)
    (cd "$apt_dir/debs" && apt-get "${apt_options[@]}" -qq download "${packages[@]}")
    for deb in "$apt_dir/debs"/*.deb; do
        dpkg-deb -x "$deb" "$root.tmp"
    done
    rm -rf "$root" && mv "$root.tmp" "$root"
    rm -rf "$apt_dir"
fi

# 2. The runtime's aarch64 wheels, installed by this machine's pip for the Pi's platform.
if [ "$extra" = edge ]; then
    litert="$(python3 -c 'import importlib.metadata as m; print(m.version("ai-edge-litert"))' 2>/dev/null || true)"
    requirements=("ai-edge-litert${litert:+==$litert}" "numpy>=2" soundfile gpiozero)
else
    requirements=("tflite-runtime==2.14.0" "numpy<2" soundfile gpiozero)
fi
site="$cache/site-$extra-$(printf '%s\n' "${requirements[@]}" | sha256sum | cut -c1-12)"
if [ ! -f "$site/.complete" ]; then
    echo "== aarch64 wheels: ${requirements[*]} -> $site"
    rm -rf "$cache/site-$extra-"*  # older sets of this extra
    platforms=()
    for tag in manylinux2014_aarch64 manylinux_2_17_aarch64 manylinux_2_27_aarch64 manylinux_2_28_aarch64 \
               manylinux_2_31_aarch64 manylinux_2_34_aarch64 manylinux_2_35_aarch64 manylinux_2_36_aarch64; do  # bookworm: glibc 2.36
        platforms+=(--platform "$tag")
    done
    python3 -m pip install -qq --disable-pip-version-check --no-warn-conflicts --target "$site" "${platforms[@]}" --python-version 3.11 \
        --implementation cp --abi cp311 --only-binary=:all: "${requirements[@]}"
    touch "$site/.complete"
fi

# 3. One prefix per CPU: the shared Python, plus the /proc/cpuinfo a Pi shows. qemu-user passes the
#    host's own cpuinfo through, which the runtime's CPU detection cannot parse (it crashes).
cpuinfo() {  # part, features
    for processor in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$processor" "$2"
        printf 'CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: %s\nCPU revision\t: 1\n\n' "$1"
    done
}
status=0
for cpu in $cpus; do
    prefix="$cache/$cpu"
    mkdir -p "$prefix/proc"
    for dir in lib usr; do
        ln -sfn "$root/$dir" "$prefix/$dir"
    done
    if [ "$cpu" = pi4 ]; then
        qemu_cpu=cortex-a72
        cpuinfo 0xd08 "fp asimd evtstrm crc32 cpuid" >"$prefix/proc/cpuinfo"
    else
        qemu_cpu=cortex-a76
        cpuinfo 0xd0b "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" \
            >"$prefix/proc/cpuinfo"
    fi
    echo "== $cpu ($qemu_cpu, emulated): python -m convert check --model-dir $model_dir${limit:+ --limit $limit}"
    QEMU_CPU="$qemu_cpu" QEMU_LD_PREFIX="$prefix" PYTHONPATH="$site:$repo" PYTHONNOUSERSITE=1 \
        qemu-aarch64-static "$root/usr/bin/python3.11" -c \
        'import platform, sys; print(f"python {platform.python_version()} on {platform.machine()}")' || status=1
    QEMU_CPU="$qemu_cpu" QEMU_LD_PREFIX="$prefix" PYTHONPATH="$site:$repo" PYTHONNOUSERSITE=1 \
        qemu-aarch64-static "$root/usr/bin/python3.11" -m convert check --model-dir "$model_dir" \
        --data-dir "$data_dir" ${limit:+--limit "$limit"} || status=1
    if [ $# -gt 0 ]; then
        echo "== $cpu ($qemu_cpu, emulated): python -m edge $*"
        QEMU_CPU="$qemu_cpu" QEMU_LD_PREFIX="$prefix" PYTHONPATH="$site:$repo" PYTHONNOUSERSITE=1 \
            qemu-aarch64-static "$root/usr/bin/python3.11" -m edge "$@" || status=1
    fi
done
exit "$status"
