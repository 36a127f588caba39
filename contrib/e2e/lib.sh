# shellcheck shell=bash disable=SC2154 # $profile, $work, $prometheus: set by the sourcing script or here
# What the end-to-end scripts (contrib/e2e/*-e2e.sh, contrib/a66/a66-e2e.sh) share: logging,
# the build of the examples, starting processes and waiting for their ready lines, Debian's
# `prometheus` on a free loopback port, the cleanup on exit, the logs on failure and the
# PASS/FAIL tally (prom_api.py, beside it, is what their python checks share). Sourced, once
# the script has `set -euo pipefail` and has cd'd to the repository root, with the name that
# starts its log lines, failures and closing line:
#
#   . contrib/e2e/lib.sh formats-e2e
#
# The globals it sets or reads are named in each function's comment: $work (the temporary
# directory), pids (what is stopped on exit), $profile and build_flags, $bin,
# $prometheus, prom_url and prom_pid, passed and failed; and the settings below, which a
# script may change after sourcing it. Needs bash 5 (EPOCHREALTIME).

e2e_name="${1:?usage: . contrib/e2e/lib.sh NAME}"
# The python checks import prom_api.py (beside this file), which names the script in its failures.
export E2E_NAME="$e2e_name" PYTHONPATH="$PWD/contrib/e2e${PYTHONPATH:+:$PYTHONPATH}"
e2e_start_us="${EPOCHREALTIME//[.,]/}"
pids=()
passed=0
failed=0
declare -gA prom_url=() prom_pid=() prom_flags=() prom_attempts=()
# Settings (see start_work and show_logs).
keep_work=0
log_lines=20
log_skip_empty=0
unset log_files

# log MESSAGE...: MESSAGE on stdout, after the name and the seconds since the script started.
log() {
    local ds=$(((${EPOCHREALTIME//[.,]/} - e2e_start_us) / 100000))
    printf '%s [%3d.%ds]: %s\n' "$e2e_name" "$((ds / 10))" "$((ds % 10))" "$*"
}

# die MESSAGE...: "NAME: FAIL: MESSAGE" on stderr, and exit 1.
die() {
    printf '%s: FAIL: %s\n' "$e2e_name" "$*" >&2
    exit 1
}

# elapsed START_US: the seconds since START_US (a ${EPOCHREALTIME//[.,]/} reading), to a tenth.
elapsed() {
    local ds=$(((${EPOCHREALTIME//[.,]/} - $1) / 100000))
    printf '%d.%d\n' "$((ds / 10))" "$((ds % 10))"
}

# check_profile SETTING: $profile must be debug or release (SETTING, such as E2E_PROFILE,
# names it in the error); sets build_flags, cargo's flags for it.
check_profile() {
    case "$profile" in
        debug) build_flags=() ;;
        release) build_flags=(--release) ;;
        *) die "$1 must be debug or release, not '$profile'" ;;
    esac
}

# require_tools TOOL...: dies unless every TOOL is on PATH.
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
    done
}

# find_prometheus: sets $prometheus, the server binary: $PROMETHEUS, else `prometheus` on
# PATH, else Debian's package installed with apt-get when running as root; dies otherwise.
find_prometheus() {
    prometheus="${PROMETHEUS:-$(command -v prometheus || true)}"
    [ -z "$prometheus" ] || return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian's prometheus"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
        prometheus="$(command -v prometheus)"
    else
        die "prometheus not found (apt-get install --no-install-recommends prometheus, or set PROMETHEUS)"
    fi
}

# prometheus_version: the version $prometheus reports, such as 2.42.0+ds.
prometheus_version() {
    "$prometheus" --version 2>&1 | head -n1 | awk '{print $3}'
}

# start_work PREFIX: creates the temporary directory $work (${TMPDIR:-/tmp}/PREFIX.XXXXXX).
# From then on, on exit, whatever happens: the processes in pids are stopped
# (stop_processes), then the script's on_cleanup function runs if it has one, then $work is
# removed (kept, and said so on stderr, when $keep_work is 1). SIGINT exits with 130,
# SIGTERM with 143, through the same cleanup; otherwise the exit status is kept.
start_work() {
    work="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    trap e2e_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# e2e_cleanup: the EXIT trap start_work sets (see there).
e2e_cleanup() {
    local status=$?
    stop_processes "${pids[@]}" || true
    if declare -F on_cleanup >/dev/null; then on_cleanup || true; fi
    if [ "$keep_work" = 1 ]; then
        echo "$e2e_name: kept $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}

# wait_gone PID TENTHS: whether PID exits within TENTHS tenths of a second (it is not signalled).
wait_gone() {
    local pid="$1" i
    for ((i = 0; i < $2; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# stop_processes PID...: SIGTERM to each PID, then for each 5 s to exit before SIGKILL; reaps
# them. Returns the exit status of the last one.
stop_processes() {
    local pid status=0
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        wait_gone "$pid" 50 || kill -KILL "$pid" 2>/dev/null || true
        status=0
        wait "$pid" 2>/dev/null || status=$?
    done
    return "$status"
}

# build_examples EXAMPLE...: builds the examples with cargo ($profile, build_flags; the
# target directory is cargo's, so CARGO_TARGET_DIR is respected) and sets $bin, the
# directory that holds their binaries.
build_examples() {
    local names="$1" args=() example i
    for ((i = 2; i <= $#; i++)); do
        if [ "$i" -eq $# ]; then names+=" and ${!i}"; else names+=", ${!i}"; fi
    done
    for example in "$@"; do args+=(--example "$example"); done
    log "building the $names examples ($profile)"
    cargo build --quiet "${build_flags[@]}" "${args[@]}"
    local target_dir
    target_dir="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    bin="$target_dir/$profile/examples"
    for example in "$@"; do
        [ -x "$bin/$example" ] || die "no $example binary in $bin"
    done
}

# start_process NAME COMMAND [ARG...]: runs COMMAND in the background, its stdout in
# $work/NAME.out and its stderr in $work/NAME.log, and adds it to pids (stopped on exit);
# $! is its pid. For environment variables: RUST_LOG=warn start_process NAME ...
start_process() {
    local name="$1"
    shift
    "$@" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=("$!")
}

# wait_for_line FILE PATTERN [WHAT [SECONDS [PID]]]: prints the first line of FILE that
# matches PATTERN (an extended regular expression), waiting up to SECONDS (default 15) for
# it, or until PID, if given, has exited. If none comes: the logs, then dies with "WHAT
# printed no ready line within SECONDS s" (without WHAT: "no line matching 'PATTERN' in FILE ...").
wait_for_line() {
    local file="$1" pattern="$2" what="${3:-}" seconds="${4:-15}" pid="${5:-}" line
    for _ in $(seq $((seconds * 10))); do
        line="$(grep -m1 -E "$pattern" "$file" 2>/dev/null || true)"
        if [ -n "$line" ]; then
            printf '%s\n' "$line"
            return 0
        fi
        [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    show_logs
    [ -z "$what" ] || die "$what printed no ready line within $seconds s"
    die "no line matching '$pattern' in $(basename "$file") within $seconds s"
}

# free_port: a TCP port free on 127.0.0.1 when asked (it could be taken before it is bound).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# launch_prometheus NAME [FLAG...]: starts $prometheus in the background with the config
# $work/NAME.yml and FLAGs (none may contain a space), on a free loopback port, with its
# log appended to $work/NAME.log and a TSDB of its own in $work; adds it to pids and sets
# prom_url[NAME] (http://127.0.0.1:PORT) and prom_pid[NAME]. Does not wait: await_prometheus.
launch_prometheus() {
    local name="$1" port
    shift
    prom_flags[$name]="$*"
    prom_attempts[$name]=$((${prom_attempts[$name]:-0} + 1))
    port="$(free_port)"
    "$prometheus" --config.file="$work/$name.yml" --storage.tsdb.path="$work/$name-data-${prom_attempts[$name]}" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn "$@" >>"$work/$name.log" 2>&1 &
    pids+=("$!")
    prom_pid[$name]="$!"
    prom_url[$name]="http://127.0.0.1:$port"
}

# await_prometheus NAME: waits (15 s at most) until the Prometheus that launch_prometheus
# started as NAME is ready. The port was free when picked but could have been taken before
# Prometheus bound it: if Prometheus exits, or is not ready in time, it is launched again
# on another port (three attempts in all; then the logs, and die). In messages, NAME's
# dashes read as spaces (prometheus-A: "prometheus A").
await_prometheus() {
    local name="$1" flags
    while true; do
        for _ in $(seq 150); do
            curl -fsS "${prom_url[$name]}/-/ready" >/dev/null 2>&1 && return 0
            kill -0 "${prom_pid[$name]}" 2>/dev/null || break
            sleep 0.1
        done
        kill "${prom_pid[$name]}" 2>/dev/null || true
        [ "${prom_attempts[$name]}" -lt 3 ] || { show_logs; die "${name//-/ } did not start (three ports tried)"; }
        log "${name//-/ } did not start on ${prom_url[$name]}; trying another port"
        read -r -a flags <<<"${prom_flags[$name]}"
        launch_prometheus "$name" "${flags[@]}"
    done
}

# start_prometheus NAME [FLAG...]: launch_prometheus, then await_prometheus.
start_prometheus() {
    launch_prometheus "$@"
    await_prometheus "$1"
}

# show_logs: on stderr (some callers run in $(...)), the name and the last $log_lines
# (default 20) lines of each of the files in the array log_files (when unset: every *.log
# and *.out in $work) that exists; only of those that are not empty when $log_skip_empty is 1.
show_logs() {
    local file files=("$work"/*.log "$work"/*.out)
    if [ -n "${log_files+set}" ]; then files=("${log_files[@]}"); fi
    for file in "${files[@]}"; do
        [ -f "$file" ] || continue
        if [ "$log_skip_empty" = 1 ] && [ ! -s "$file" ]; then continue; fi
        echo "---- $(basename "$file") (last $log_lines lines)"
        tail -n "$log_lines" "$file"
    done >&2
}

# record PASS|FAIL NAME [DETAIL]: prints a check's line, "PASS  NAME: DETAIL", and counts it
# in passed or failed.
record() {
    printf '%s  %s:%s\n' "$1" "$2" "${3:+ $3}"
    if [ "$1" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

# add_counts FILE: adds to passed and failed what a python check wrote in FILE: lines
# "P F" (counts) or "PASS name" and "FAIL name" (one check each). A FILE that does not
# exist counts as one failed check (the checks stopped before writing it).
add_counts() {
    local p f
    if [ ! -f "$1" ]; then
        failed=$((failed + 1))
        return 0
    fi
    read -r p f < <(awk '$1 == "PASS" { p++; next } $1 == "FAIL" { f++; next } { p += $1; f += $2 }
        END { print p + 0, f + 0 }' "$1")
    passed=$((passed + p)) failed=$((failed + f))
}

# finish [STATUS [MESSAGE]]: ends the script with its closing line, "NAME: P passed, F
# failed". If a check failed or STATUS (default 0) is not 0: the logs first, and exit 1;
# otherwise MESSAGE (default "all checks passed; stopping everything") is logged first,
# and exit 0.
finish() {
    if [ "${1:-0}" -ne 0 ] || [ "$failed" -ne 0 ]; then
        show_logs
        echo "$e2e_name: $passed passed, $failed failed"
        exit 1
    fi
    log "${2:-all checks passed; stopping everything}"
    echo "$e2e_name: $passed passed, 0 failed"
    exit 0
}
