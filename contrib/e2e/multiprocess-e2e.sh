#!/usr/bin/env bash
# End to end for the multi-process mode: the example server with `--workers N` (N worker
# processes sharing the gRPC port with SO_REUSEPORT, the supervisor serving /metrics with
# their sum), the loadgen example with many connections, /metrics scraped every 200 ms
# throughout, one worker killed with SIGKILL in the middle of the traffic and three more
# while the service is idle, then SIGTERM to the supervisor:
#
#   - scrapes: every scrape of the whole run answers 200 and parses as the text format
#     (one TYPE per family, samples inside their family, no duplicate series, histogram
#     buckets cumulative with _count = the +Inf bucket);
#   - monotonic: no counter, _bucket, _count or _sum series ever goes down (or vanishes)
#     between two consecutive scrapes, across the kills, restarts and compactions
#     (Prometheus' rate() reads any decrease, however small, as a counter reset);
#   - spread: every worker owns some of the load generator's connections (sampled from
#     /proc while it runs), and so does the restarted worker once it is back;
#   - before the kill: the sum over the workers equals what loadgen was answered, code by
#     code, exactly; started = handled; the latency histogram's count = handled; and the
#     served sum settles within one publish interval (1 s) of the end of the traffic;
#   - publishing under load: each worker's snapshot file (its mtime, sampled every 50 ms)
#     is replaced at least every 2 intervals (a missed publish would double the crash
#     loss; the longest gap and the killed worker's last publish are printed);
#   - SIGKILL mid-run (of the worker whose snapshot sorts last, so that folding it into
#     the archive reorders the sum most): the supervisor restarts it; afterwards
#     sum(grpc_server_handled_total) equals the calls answered minus at most the documented
#     crash loss (what the killed worker handled in its last publish interval), per code
#     and in total; the bound is measured (every call, to any worker, of every loadgen run
#     overlapping the killed worker's unpublished window: from its last publish seen in
#     /proc samples, at least one interval, to the kill) and the actual shortfall printed; calls
#     the client saw fail because of the kill (in flight, or on the broken connection)
#     are counted apart: no worker answered them;
#   - started vs handled after the kill: started - handled is exactly the calls that were
#     in flight in the killed worker when it last published (they started and never
#     ended), so 0 <= started - handled <= shortfall + calls failed at the client, and
#     <= the calls in flight; the histogram's count = handled;
#   - SIGKILL while idle (E2E_IDLE_KILLS workers, one after the other): nothing is in
#     flight nor unpublished, so every counter, bucket and count served stays exactly as
#     it was through the death, the folding of the dead worker into the group's archive
#     and the restart, and no _sum goes down (a drift in a sum's last digits is printed);
#   - the group directory holds one snapshot per live process and one archive (the dead
#     are folded, not accumulated), one lock file per live process and no lock or
#     temporary file of a dead one;
#   - no warning in the logs but the supervisor's restarts (a sibling-group warning would be
#     a false alarm: all the processes are one service);
#   - SIGTERM to the supervisor: it exits with status 0 within the workers' grace period
#     (10 s; past it the supervisor would SIGKILL them), and no worker is left.
#
#   contrib/e2e/multiprocess-e2e.sh
#
# Environment (all optional):
#   E2E_PROFILE       debug (default) or release
#   E2E_WORKERS       worker processes (default 4)
#   E2E_CONNECTIONS   HTTP/2 connections per loadgen run (default 16: with 4 workers, the
#                     chance that one gets no connection in all three first runs is ~1e-5)
#   E2E_CONCURRENCY   calls in flight per loadgen run (default 64)
#   E2E_BURST         requests per loadgen run around the kill (default 600; the runs are
#                     short so that the crash-loss bound, counted in whole runs, is tight)
#   E2E_IDLE_KILLS    workers killed one after the other while idle (default 3)
#   E2E_KEEP          1: keep the temporary directory (scrapes, /proc samples, logs)
#   CARGO_TARGET_DIR, CARGO_BUILD_JOBS  respected, like cargo does.
# Needs cargo, python3 (standard library only) and Linux (/proc, SO_REUSEPORT). After the
# build it takes about 17 s; every wait is bounded. Everything it starts is
# stopped and its temporary directory removed on exit, whatever happens. Prints PASS/FAIL
# per check, then "multiprocess-e2e: N passed, M failed", and exits non-zero if any
# check fails (with the last lines of the logs).
set -euo pipefail
cd "$(dirname "$0")/../.."

profile="${E2E_PROFILE:-debug}"
workers="${E2E_WORKERS:-4}"
connections="${E2E_CONNECTIONS:-16}"
concurrency="${E2E_CONCURRENCY:-64}"
burst="${E2E_BURST:-600}"
idle_kills="${E2E_IDLE_KILLS:-3}"
# The example server's publish interval (the crate's default, DEFAULT_PUBLISH_INTERVAL).
interval=1

now() { local t="${EPOCHREALTIME/,/.}"; printf '%s\n' "$t"; }

. contrib/e2e/lib.sh multiprocess-e2e
check_profile E2E_PROFILE
[ "$(uname -s)" = Linux ] || die "needs Linux (SO_REUSEPORT, /proc)"
require_tools cargo python3
[ "$workers" -ge 2 ] || die "E2E_WORKERS must be at least 2"
[ "$idle_kills" -ge 1 ] && [ "$idle_kills" -le "$workers" ] || die "E2E_IDLE_KILLS must be in 1..E2E_WORKERS"

server_pid="" monitor_pid="" bursts_pid="" grpc_port=""

# The direct children of a process (from /proc: the field after the command's ')').
children_of() {
    local parent="$1" stat line pid
    for stat in /proc/[0-9]*/stat; do
        { read -r line <"$stat"; } 2>/dev/null || continue
        line="${line##*) }"
        read -r _ ppid _ <<<"$line"
        if [ "$ppid" = "$parent" ]; then
            pid="${stat#/proc/}"
            printf '%s\n' "${pid%/stat}"
        fi
    done
}
# Whether a pid is one of our workers: a live process running `server --worker` on our
# gRPC port (a pid reused by something else after a worker died is never signalled).
is_our_worker() {
    local pid="$1" cmdline
    [ -n "$grpc_port" ] || return 1
    cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
    [[ "$cmdline" == *" --worker "* && "$cmdline" == *" --port=$grpc_port "* ]]
}
# On exit, whatever happens (lib.sh's cleanup, before it removes the temp dir): stop the
# loadgen runs, the supervisor and any worker left, and the scraper.
on_cleanup() {
    local pid
    touch "$work/stop-bursts" "$work/stop-monitor"
    if [ -n "$bursts_pid" ]; then
        for pid in $(children_of "$bursts_pid"); do kill -TERM "$pid" 2>/dev/null || true; done
        kill -TERM "$bursts_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        # The supervisor stops its workers (SIGTERM, then SIGKILL after 10 s).
        kill -TERM "$server_pid" 2>/dev/null || true
        wait_gone "$server_pid" 150 || kill -KILL "$server_pid" 2>/dev/null || true
    fi
    # Any worker left (its supervisor killed, or dead before it could stop them).
    if [ -n "$grpc_port" ]; then
        for pid in /proc/[0-9]*; do
            pid="${pid#/proc/}"
            if is_our_worker "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
        done
    fi
    if [ -n "$monitor_pid" ]; then
        wait_gone "$monitor_pid" 30 || kill -TERM "$monitor_pid" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
}
# --- Cleanup: whatever happens from here on, stop what was started and remove the temp dir
# (kept with E2E_KEEP=1).
start_work tonic-metrics-mp-e2e
keep_work="${E2E_KEEP:-0}"
# On failure: the last 30 lines of these logs, the empty ones left out.
log_files=("$work"/server.log "$work"/server.out "$work"/loadgen.log "$work"/monitor.log)
log_lines=30
log_skip_empty=1

mark() { printf '%s %s\n' "$1" "$(now)" >>"$work/marks"; }

# --- Build.
build_examples server loadgen

# --- The supervisor and its workers. Info logs: the supervisor's "worker exited;
# restarting it" and "worker started" lines are evidence; no per-RPC line is at info.
mkdir "$work/mp"
RUST_LOG=info "$bin/server" --host 127.0.0.1 --port 0 --metrics-port 0 --workers "$workers" \
    --multiproc-dir "$work/mp" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
line="$(wait_for_line "$work/server.out" '^gRPC listening on ' 'the server' 20 "$server_pid")"
# "gRPC listening on 127.0.0.1:P (4 workers, pids [a, b, c, d]); metrics on http://127.0.0.1:M/metrics"
grpc="$(sed -nE 's/^gRPC listening on ([^ ;]+) .*/\1/p' <<<"$line")"
metrics="$(sed -nE 's|.*metrics on http://([^/]+)/metrics.*|\1|p' <<<"$line")"
first_pids="$(sed -nE 's/.*pids \[([0-9, ]*)\].*/\1/p' <<<"$line" | tr -d ' ')"
grpc_port="${grpc##*:}"
[ -n "$grpc" ] && [ -n "$metrics" ] && [ -n "$first_pids" ] || die "cannot read the ready line: '$line'"
IFS=, read -r -a ready_pids <<<"$first_pids"
[ "${#ready_pids[@]}" -eq "$workers" ] || die "the ready line names ${#ready_pids[@]} workers, not $workers: '$line'"
printf '%s\n' "${ready_pids[@]}" >"$work/worker-pids"
groupdir="$(find "$work/mp" -mindepth 1 -maxdepth 1 -type d | head -n1)"
[ -n "$groupdir" ] || die "no group directory under $work/mp"
log "supervisor $server_pid: gRPC $grpc, metrics $metrics, workers ${ready_pids[*]}, group dir $groupdir"

# --- Python (standard library only): the monitor (scrapes, /proc samples) and the checks.
export WORK="$work" METRICS="$metrics" SUPERVISOR="$server_pid" GRPC_PORT="$grpc_port" WORKERS="$workers"
export CONCURRENCY="$concurrency" INTERVAL="$interval" GROUPDIR="$groupdir"
py() { python3 - "$@" <<'PY'
import json, math, os, re, sys, threading, time, urllib.error, urllib.request

WORK = os.environ["WORK"]

def children(parent):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[1] == str(parent):
            out.append(int(entry))
    return sorted(out)

def connections(pids, port):
    """Established TCP connections whose local port is `port`, counted by owning pid."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except OSError:
            pass
    owned = {}
    for pid in pids:
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    n += 1
        except OSError:
            continue
        owned[str(pid)] = n
    return owned

# ---- The text format, parsed strictly enough to catch a torn or malformed exposition.
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

def parse_labels(line, i, lineno):
    labels = []
    i += 1  # '{'
    while True:
        if line[i] == "}":
            return tuple(labels), i + 1
        m = LABEL.match(line, i)
        if not m:
            raise ValueError(f"line {lineno}: bad label name at {i}: {line!r}")
        name = m.group(0)
        i = m.end()
        if line[i:i + 2] != '="':
            raise ValueError(f"line {lineno}: expected =\" after {name}: {line!r}")
        i += 2
        value = []
        while line[i] != '"':
            if line[i] == "\\":
                escaped = {"\\": "\\", '"': '"', "n": "\n"}.get(line[i + 1])
                if escaped is None:
                    raise ValueError(f"line {lineno}: bad escape in {line!r}")
                value.append(escaped)
                i += 2
            else:
                value.append(line[i])
                i += 1
        i += 1
        labels.append((name, "".join(value)))
        if line[i] == ",":
            i += 1
        elif line[i] != "}":
            raise ValueError(f"line {lineno}: expected , or }} after label {name}: {line!r}")

def parse(text):
    """{(sample name, labels): value} and {family: type}; raises ValueError if malformed."""
    types, samples, current = {}, {}, None
    if text and not text.endswith("\n"):
        raise ValueError("no final newline")
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                if not NAME.fullmatch(parts[2]):
                    raise ValueError(f"line {lineno}: bad metric name in {line!r}")
                if parts[1] == "TYPE":
                    kind = parts[3] if len(parts) > 3 else ""
                    if kind not in TYPES:
                        raise ValueError(f"line {lineno}: bad type {kind!r}")
                    if parts[2] in types:
                        raise ValueError(f"line {lineno}: second TYPE for {parts[2]}")
                    types[parts[2]], current = kind, parts[2]
            continue
        m = NAME.match(line)
        if not m:
            raise ValueError(f"line {lineno}: bad sample {line!r}")
        name, i = m.group(0), m.end()
        labels = ()
        if i < len(line) and line[i] == "{":
            labels, i = parse_labels(line, i, lineno)
        rest = line[i:].split(" ")
        if rest[0] != "" or len(rest) not in (2, 3):
            raise ValueError(f"line {lineno}: bad value part {line[i:]!r}")
        value = float(rest[1])  # ValueError if not a number
        if len(rest) == 3:
            int(rest[2])
        kind = types.get(current)
        suffixes = {"counter": [""], "gauge": [""], "untyped": [""],
                    "histogram": ["_bucket", "_sum", "_count"], "summary": ["", "_sum", "_count"]}.get(kind, [])
        if current is None or not any(name == current + s for s in suffixes):
            raise ValueError(f"line {lineno}: sample {name} outside its family (current {current})")
        if name.endswith("_bucket") and kind == "histogram" and not any(k == "le" for k, _ in labels):
            raise ValueError(f"line {lineno}: bucket without le")
        if kind == "counter" and not (value >= 0):
            raise ValueError(f"line {lineno}: counter {value}")
        key = (name, labels)
        if key in samples:
            raise ValueError(f"line {lineno}: duplicate series {name}{dict(labels)}")
        samples[key] = value
    # Histograms: cumulative buckets, +Inf = _count.
    for family, kind in types.items():
        if kind != "histogram":
            continue
        series = {}
        for (name, labels), value in samples.items():
            if name == family + "_bucket":
                le = dict(labels)["le"]
                rest = tuple(l for l in labels if l[0] != "le")
                series.setdefault(rest, []).append((float(le), value))
        for rest, buckets in series.items():
            buckets.sort()
            if buckets[-1][0] != math.inf:
                raise ValueError(f"{family}{dict(rest)}: no +Inf bucket")
            if any(b[1] < a[1] for a, b in zip(buckets, buckets[1:])):
                raise ValueError(f"{family}{dict(rest)}: buckets not cumulative: {buckets}")
            count = samples.get((family + "_count", rest))
            if count != buckets[-1][1]:
                raise ValueError(f"{family}{dict(rest)}: _count {count} != +Inf bucket {buckets[-1][1]}")
    return samples, types

def monotonic_kind(name, types):
    """Whether a sample must never go down: counters, and histograms' _bucket/_count/_sum."""
    if types.get(name) == "counter":
        return True
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
            return True
    return False

def show(key):
    name, labels = key
    inner = ",".join(f'{k}="{v}"' for k, v in labels if k not in ("grpc_type",))
    return f"{name}{{{inner}}}"

command = sys.argv[1]

if command == "monitor":
    url = f"http://{os.environ['METRICS']}/metrics"
    supervisor, port = int(os.environ["SUPERVISOR"]), int(os.environ["GRPC_PORT"])
    groupdir = os.environ["GROUPDIR"]
    stop = os.path.join(WORK, "stop-monitor")
    deadline = time.time() + 300  # bounded even if nobody stops it
    os.makedirs(os.path.join(WORK, "scrapes"), exist_ok=True)

    def scraper():
        period, seq = 0.2, 0
        due = time.time()
        with open(os.path.join(WORK, "scrapes.jsonl"), "a") as out:
            while not os.path.exists(stop) and time.time() < deadline:
                record = {"seq": seq, "t0": time.time()}
                body = b""
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        body = response.read()
                        record.update(status=response.status, ctype=response.headers.get("Content-Type", ""))
                except urllib.error.HTTPError as error:
                    record.update(status=error.code, error=str(error))
                except Exception as error:  # refused, reset, timeout: all failures of this scrape
                    record.update(status=None, error=repr(error))
                record["t1"] = time.time()
                with open(os.path.join(WORK, "scrapes", f"{seq:05d}.prom"), "wb") as f:
                    f.write(body)
                out.write(json.dumps(record) + "\n")
                out.flush()
                seq += 1
                due += period
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                else:
                    due = time.time()  # late: start the next one now, without a burst

    def sampler():
        seen = set()
        with open(os.path.join(WORK, "procs.jsonl"), "a") as out, \
                open(os.path.join(WORK, "worker-pids"), "a") as pids:
            while not os.path.exists(stop) and time.time() < deadline:
                t = time.time()
                kids = children(supervisor)
                for pid in kids:
                    if pid not in seen:
                        seen.add(pid)
                        pids.write(f"{pid}\n")
                        pids.flush()
                published = {}
                try:
                    for entry in os.scandir(groupdir):
                        if entry.name.endswith(".snap"):
                            try:
                                published[entry.name] = entry.stat().st_mtime_ns
                            except OSError:
                                pass
                except OSError:
                    pass
                out.write(json.dumps({"t": t, "workers": kids, "conns": connections(kids, port),
                                      "published": published}) + "\n")
                out.flush()
                time.sleep(0.05)

    threads = [threading.Thread(target=scraper), threading.Thread(target=sampler)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

elif command == "wait-scrape":
    # Until a scrape that started after the given time has completed (bounded).
    since, limit = float(sys.argv[2]), float(sys.argv[3])
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with open(os.path.join(WORK, "scrapes.jsonl")) as f:
                if any(json.loads(l)["t0"] > since for l in f if l.strip()):
                    sys.exit(0)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"no scrape after {since} within {limit} s")

elif command == "check":
    interval = float(os.environ["INTERVAL"])
    workers, concurrency = int(os.environ["WORKERS"]), int(os.environ["CONCURRENCY"])
    marks = {}
    for line in open(os.path.join(WORK, "marks")):
        name, t = line.split()
        marks[name] = float(t)
    records = [json.loads(l) for l in open(os.path.join(WORK, "scrapes.jsonl")) if l.strip()]
    procs = [json.loads(l) for l in open(os.path.join(WORK, "procs.jsonl")) if l.strip()]
    passes, failures = [], []

    def check(name, ok, detail):
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        (passes if ok else failures).append(name)

    def since_start(t):
        return f"{t - marks['start']:.2f}s"

    # ---- 1. Every scrape answered and parsed.
    bad, parsed = [], []
    for r in records:
        body = open(os.path.join(WORK, "scrapes", f"{r['seq']:05d}.prom"), "rb").read()
        if r.get("status") != 200:
            bad.append(f"#{r['seq']} at {since_start(r['t0'])}: status {r.get('status')} {r.get('error', '')}")
            continue
        if not r.get("ctype", "").startswith("text/plain"):
            bad.append(f"#{r['seq']}: Content-Type {r.get('ctype')!r}")
            continue
        try:
            samples, types = parse(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, IndexError) as error:
            bad.append(f"#{r['seq']} at {since_start(r['t0'])}: does not parse: {error}")
            continue
        parsed.append((r, samples, types))
    span = records[-1]["t0"] - records[0]["t0"] if records else 0
    gaps = [b["t0"] - a["t0"] for a, b in zip(records, records[1:])]
    latency = sorted(r["t1"] - r["t0"] for r in records)
    expected = span / 0.2 + 1
    check("scrapes", records and not bad and len(records) >= 0.9 * expected,
          f"{len(records)} scrapes over {span:.1f} s (every 200 ms: {expected:.0f} due), all HTTP 200 and parsed"
          if not bad else f"{len(bad)} of {len(records)} failed: " + "; ".join(bad[:5]))
    if records:
        print(f"      scrape spacing max {max(gaps or [0]) * 1000:.0f} ms; time to answer median "
              f"{latency[len(latency) // 2] * 1000:.1f} ms, max {latency[-1] * 1000:.1f} ms")
    # The workers' pre-initialised (zero) series reach the sum with their first publish
    # that follows the layer's registration: up to one publish interval after the start.
    first = next((r for r, sm, ty in parsed if any(n == "grpc_server_handled_total" for n, _ in sm)), None)
    if first is not None and first is not (parsed[0][0] if parsed else None):
        print(f"      note: the first {first['seq']} scrapes (up to {first['t0'] - marks['start']:.2f} s after the ready "
              f"line) had no grpc_server_* series yet")

    # ---- 2. Monotonic between consecutive scrapes.
    decreases, vanished, compared = [], [], 0
    for (ra, a, ta), (rb, b, tb) in zip(parsed, parsed[1:]):
        if rb["seq"] != ra["seq"] + 1:
            continue  # a failed scrape in between is reported above
        compared += 1
        for key, before in a.items():
            if not monotonic_kind(key[0], ta):
                continue
            after = b.get(key)
            if after is None:
                vanished.append((rb, key, before))
            elif after < before:
                decreases.append((rb, key, before, after))

    def when(r):
        name, t = max(((n, t) for n, t in marks.items() if t <= r["t0"]), key=lambda kv: kv[1])
        return f"scrape #{r['seq']} at {since_start(r['t0'])} ({r['t0'] - t:.2f} s after {name})"
    detail = "; ".join([f"{when(r)}: {show(k)} {x!r} -> {y!r} ({y - x:+.3g})" for r, k, x, y in decreases[:6]]
                       + [f"{when(r)}: {show(k)} ({x!r}) vanished" for r, k, x in vanished[:3]])
    check("monotonic", compared > 0 and not decreases and not vanished,
          f"no counter, _bucket, _count or _sum series went down or vanished over {compared} consecutive pairs"
          if not (decreases or vanished) else
          f"{len(decreases)} decreases, {len(vanished)} vanished series: {detail}")

    # ---- Values at chosen times.
    def scrape_at(t, before=None):
        """The first parsed scrape started at or after t (and before `before`)."""
        for r, s, ty in parsed:
            if r["t0"] >= t and (before is None or r["t0"] < before):
                return r, s
        return None, None

    def last_before(t):
        found = (None, None)
        for r, s, ty in parsed:
            if r["t1"] < t:
                found = (r, s)
        return found

    def total(samples, name, **match):
        return sum(v for (n, labels), v in samples.items()
                   if n == name and all(dict(labels).get(k) == x for k, x in match.items()))

    def by_code(samples):
        out = {}
        for (n, labels), v in samples.items():
            if n == "grpc_server_handled_total" and v:
                code = dict(labels)["grpc_code"]
                out[code] = out.get(code, 0) + int(v)
        return out

    def loadgen(path):
        lines = [l for l in open(path).read().splitlines() if l.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else None

    # ---- 3. Spread: connections owned by each worker while loadgen ran.
    def owners(t0, t1):
        seen = {}
        for p in procs:
            if t0 <= p["t"] <= t1:
                for pid, n in p["conns"].items():
                    if n:
                        seen[pid] = max(seen.get(pid, 0), n)
        return seen
    runs = [name[:-6] for name in marks if name.startswith("run") and name.endswith("-start")]
    per_run = {run: owners(marks[run + "-start"], marks[run + "-end"]) for run in runs}
    first_workers = [str(p) for p in json.loads(os.environ["FIRST_PIDS"])]
    union = set().union(*per_run.values()) if per_run else set()
    check("every worker takes traffic",
          all(len(o) >= min(3, workers) for o in per_run.values()) and set(first_workers) <= union,
          "connections per worker pid during each first run: " +
          "; ".join(f"{run}: {dict(sorted(o.items()))}" for run, o in per_run.items()) +
          f" (workers {first_workers})")
    restarted = os.environ["RESTARTED"]
    after_restart = owners(marks["restarted"], marks["stop-bursts"])
    check("restarted worker takes traffic", after_restart.get(restarted, 0) > 0,
          f"worker {restarted} (restarted {marks['restarted'] - marks['kill']:.2f} s after the SIGKILL) owned "
          f"{after_restart.get(restarted, 0)} connections; all owners after the restart: {dict(sorted(after_restart.items()))}")

    # ---- 4. Before the kill: exact.
    phase_a = [loadgen(os.path.join(WORK, f"{run}.json")) for run in sorted(runs)]
    plans = json.loads(os.environ["PLANS"])
    sent_a = {}
    plan_ok = True
    for run, result in zip(sorted(runs), phase_a):
        n, every, code = plans[run]
        intended = {"OK": n - (n // every if every else 0)}
        if every:
            intended[code] = n // every
        if result is None or result["codes"] != intended:
            plan_ok = False
            print(f"      {run}: loadgen answered {result and result['codes']}, intended {intended}")
        for c, k in (result or {"codes": {}})["codes"].items():
            sent_a[c] = sent_a.get(c, 0) + k
    r_final_a, s_final_a = last_before(marks["bursts-start"])
    r_early, s_early = scrape_at(marks["phase-a-end"] + interval + 0.3, marks["bursts-start"])
    if s_final_a is None or s_early is None:
        check("before the kill: exact", False, "no scrape between the first runs and the bursts")
    else:
        h, st = total(s_final_a, "grpc_server_handled_total"), total(s_final_a, "grpc_server_started_total")
        cnt = total(s_final_a, "grpc_server_handling_seconds_count")
        codes_a = by_code(s_final_a)
        check("before the kill: exact",
              plan_ok and codes_a == sent_a and h == st == cnt == sum(sent_a.values()),
              f"sum(handled) = {h:g} by code {codes_a}; loadgen was answered {sent_a} "
              f"({sum(sent_a.values())} calls, as planned: {plan_ok}); sum(started) = {st:g}; "
              f"sum(grpc_server_handling_seconds_count) = {cnt:g}")
        early_h = total(s_early, "grpc_server_handled_total")
        check("settled within one publish interval", by_code(s_early) == codes_a,
              f"the first scrape {r_early['t0'] - marks['phase-a-end']:.2f} s after the traffic ended already "
              f"served sum(handled) = {early_h:g} (final {h:g})")

    # ---- Publishing under load: each worker replaces its snapshot every interval (the
    # crash-loss bound in time), and the killed one had published within one before dying.
    history = {}
    for p in procs:
        for name, mtime in p.get("published", {}).items():
            history.setdefault(name, set()).add(mtime)
    supervisor_prefix = os.environ["SUPERVISOR"] + "-"
    longest = {}
    for name, mtimes in history.items():
        if name == "archive.snap" or name.startswith(supervisor_prefix):
            continue  # the supervisor also publishes on every scrape
        ts = sorted(mtimes)
        if len(ts) >= 3:
            longest[name.split("-")[0]] = max(b - a for a, b in zip(ts, ts[1:])) / 1e9
    worst = max(longest.values()) if longest else math.inf
    victim = os.environ["VICTIM"]
    seen = [max(m for n, m in p.get("published", {}).items() if n.startswith(victim + "-"))
            for p in procs if p["t"] < marks["kill"] and any(n.startswith(victim + "-") for n in p.get("published", {}))]
    age = marks["kill"] - max(seen) / 1e9 if seen else math.inf
    # Under load the gap is the interval plus scheduling delays: a missed publish would
    # make it twice the interval.
    check("publish interval under load", worst < 2 * interval and age < 2 * interval,
          f"longest time between two publishes of a worker {worst:.3f} s (interval {interval:g} s; "
          f"per worker {', '.join(f'{k}: {v:.3f}' for k, v in sorted(longest.items()))}); the killed worker "
          f"{victim} had last published {age:.3f} s before the SIGKILL")

    # ---- 5. SIGKILL mid-run: the crash loss, bounded.
    bursts = []
    for line in open(os.path.join(WORK, "bursts.tsv")):
        i, t0, t1, rc = line.split()
        bursts.append({"i": int(i), "t0": float(t0), "t1": float(t1), "rc": int(rc),
                       "result": loadgen(os.path.join(WORK, f"burst-{i}.json"))})
    app_codes = {"OK", "NotFound"}
    failed_runs = [b["i"] for b in bursts if b["rc"] != 0 or b["result"] is None]
    answered, client_failed = dict(sent_a), {}
    for b in bursts:
        for c, k in (b["result"] or {"codes": {}})["codes"].items():
            target = answered if c in app_codes else client_failed
            target[c] = target.get(c, 0) + k
    A, U = sum(answered.values()), sum(client_failed.values())
    kill = marks["kill"]
    # What the killed worker could lose: what it handled since its last publish, which the
    # /proc samples saw at most `age` before the kill (the samples are 50 ms apart: a later
    # publish only shortens it). The bound counts every call of every run overlapping that.
    window = max(interval, age) + 0.1
    around = [b for b in bursts if b["t1"] >= kill - window and b["t0"] <= kill]
    bound = sum(sum((b["result"] or {"codes": {}})["codes"].values()) for b in around)
    r_final, s_final = last_before(marks["quiet-kill"])
    check("loadgen runs", not failed_runs and bursts and len(around) > 0,
          f"{len(bursts)} runs of {os.environ['BURST']} calls around the kill, all completed"
          if not failed_runs else f"runs {failed_runs} failed (see loadgen.log)")
    if s_final is None:
        check("crash loss", False, "no scrape before the quiet kill")
    else:
        H_codes = by_code(s_final)
        H = sum(H_codes.values())
        started = total(s_final, "grpc_server_started_total")
        cnt = total(s_final, "grpc_server_handling_seconds_count")
        shortfall = A - H
        per_code = {c: answered.get(c, 0) - H_codes.get(c, 0) for c in sorted(set(answered) | set(H_codes))}
        print(f"      loadgen sent {A + U} calls: answered by a worker {A} {answered}; failed at the client "
              f"because of the kill {U} {client_failed}")
        print(f"      crash-loss bound: the {len(around)} runs overlapping [kill - {window:.2f} s, kill] sent {bound} calls "
              f"(the whole group's, for {len(around)} x ~{(sum(b['t1'] - b['t0'] for b in around) / max(1, len(around))):.2f} s)")
        check("handled after the kill",
              -U <= shortfall <= bound and all(-U <= d <= bound for d in per_code.values()),
              f"sum(grpc_server_handled_total) = {H} by code {H_codes}; answered {A}: shortfall {shortfall} "
              f"(per code {per_code}), within [-{U}, {bound}] (the killed worker's unpublished calls)")
        d = started - H
        check("started vs handled after the kill",
              0 <= d <= min(concurrency, shortfall + U),
              f"sum(started) - sum(handled) = {started:g} - {H} = {d:g}: the calls in flight in the killed worker "
              f"at its last publish, within [0, min(in flight {concurrency}, shortfall {shortfall} + failed {U})]")
        # A snapshot reads the histograms before `handled` (the reverse of the order a call
        # updates them), so the killed worker's last snapshot, frozen while calls ran, can
        # only hold fewer observations than `handled`, never more, and by at most the calls
        # in flight while it was taken. Every live worker's count equals its `handled`.
        check("histogram count vs handled", 0 <= H - cnt <= concurrency,
              f"sum(grpc_server_handling_seconds_count) = {cnt:g} <= sum(grpc_server_handled_total) = {H}, "
              f"by at most the calls in flight ({concurrency}): {H - cnt:g}")
        # Per method too: the histogram is per method, handled per method and code.
        methods = {}
        for (n, labels), v in s_final.items():
            lab = dict(labels)
            m = (lab.get("grpc_service"), lab.get("grpc_method"))
            if n == "grpc_server_handled_total":
                methods.setdefault(m, [0, 0])[0] += v
            elif n == "grpc_server_handling_seconds_count":
                methods.setdefault(m, [0, 0])[1] += v
        odd = {f"{s}/{m}": v for (s, m), v in methods.items() if v[0] != v[1]}
        if odd:
            print(f"      per method (handled, count) that differ: {odd}")
        # A worker's snapshot can be taken between a call's handled increment and its
        # histogram observation: a live worker's next publish heals it, a SIGKILLed
        # worker's last snapshot stays in the sum as it was taken.
        during = [sm for r, sm, ty in parsed if marks["start"] <= r["t0"] <= marks["traffic-end"]]
        torn = [sm for sm in during
                if total(sm, "grpc_server_handled_total") != total(sm, "grpc_server_handling_seconds_count")]
        print(f"      scrapes during the traffic with sum(handled) != sum(count): {len(torn)} of {len(during)}")

    # ---- 6. SIGKILL while idle: nothing to lose. Counts (integers) must stay exactly as
    # they were. A _sum is a float added up over the processes: it must not go down (the
    # monotonic check above) nor lose anything; a drift in its last digits is shown.
    r_q, s_q = last_before(marks["quiet-kill"])
    changed, drifted, compared_after = {}, {}, 0
    for r, s, ty in parsed:
        if r["t0"] <= marks["quiet-kill"] or s_q is None:
            continue
        compared_after += 1
        for key, before in s_q.items():
            after = s.get(key)
            if not monotonic_kind(key[0], ty) or after == before:
                continue
            if key[0].endswith("_sum") and after is not None and abs(after - before) <= 1e-12 * max(1.0, abs(before)):
                drifted.setdefault(key, (r, before, after))
            else:
                changed.setdefault(key, (r, before, after))
    check("idle SIGKILL loses nothing",
          compared_after >= 3 and s_q is not None and not changed,
          f"{compared_after} scrapes after killing idle workers {os.environ['QUIET_VICTIMS']} one after the other "
          f"(restarted as {os.environ['QUIET_RESTARTED']}, each folded into the archive) equal the last one before"
          if not changed else f"{len(changed)} series changed: " + "; ".join(
              f"{show(k)} {x!r} -> {y!r} first at {when(r)}" for k, (r, x, y) in list(changed.items())[:5]))
    for key, (r, x, y) in drifted.items():
        print(f"      note: {show(key)} drifted {x!r} -> {y!r} ({y - x:+.3g}) at {when(r)}, with no call made: "
              f"the float sum over the processes depends on the order it is added up in")

    with open(os.path.join(WORK, "counts"), "w") as f:
        f.write(f"{len(passes)} {len(failures)}\n")
    sys.exit(1 if failures else 0)
PY
}

mark start
py monitor >>"$work/monitor.log" 2>&1 &
monitor_pid=$!
py wait-scrape "$(now)" 10 || { show_logs; die "no scrape of http://$metrics/metrics"; }

run_loadgen() { # name, loadgen flags...
    local name="$1"
    shift
    mark "$name-start"
    timeout 60 "$bin/loadgen" --target "$grpc" --connections "$connections" --concurrency "$concurrency" \
        --json "$@" >"$work/$name.json" 2>>"$work/loadgen.log" || { show_logs; die "loadgen $name failed"; }
    mark "$name-end"
    log "$name: $(tail -n 1 "$work/$name.json")"
}

# --- Phase A: known calls of three codes, every worker taking some, then an exact check.
log "first runs: $connections connections, $concurrency in flight"
run_loadgen run1 --requests 2000
run_loadgen run2 --requests 1400 --error-every 7 --error-code NotFound
run_loadgen run3 --requests 1500 --error-every 5 --error-code Internal
export PLANS='{"run1": [2000, 0, ""], "run2": [1400, 7, "NotFound"], "run3": [1500, 5, "Internal"]}'
mark phase-a-end
sleep 2 # one publish interval, and more: the exact check takes the last scrape before the bursts

# --- Phase B: short loadgen runs back to back; a worker is killed in their middle.
: >"$work/bursts.tsv"
burst_loop() {
    local i=0 t0 rc
    while [ ! -e "$work/stop-bursts" ] && [ "$i" -lt 500 ]; do
        t0="$(now)"
        rc=0
        timeout 30 "$bin/loadgen" --target "$grpc" --connections "$connections" --concurrency "$concurrency" \
            --requests "$burst" --error-every 6 --error-code NotFound --json \
            >"$work/burst-$i.json" 2>>"$work/loadgen.log" || rc=$?
        printf '%s %s %s %s\n' "$i" "$t0" "$(now)" "$rc" >>"$work/bursts.tsv"
        i=$((i + 1))
    done
}
# The live worker whose snapshot file sorts last: the sum runs over the files in name
# order, so folding this one into the archive (summed first) reorders the sum most.
pick_victim() { # [file of the pids to choose from]
    local pid file best="" best_pid=""
    for pid in $(children_of "$server_pid"); do
        if [ -n "${1:-}" ] && ! grep -qx "$pid" "$1"; then continue; fi
        for file in "$groupdir/$pid"-*.snap; do
            [ -e "$file" ] || continue
            if [ -z "$best" ] || [[ "$(basename "$file")" > "$best" ]]; then
                best="$(basename "$file")" best_pid="$pid"
            fi
        done
    done
    [ -n "$best_pid" ] || return 1
    printf '%s\n' "$best_pid"
}
wait_restart() { # victim pid: prints the new worker's pid once it has joined the group
    local victim="$1" kids pid
    for _ in $(seq 200); do
        mapfile -t kids < <(children_of "$server_pid")
        if [ "${#kids[@]}" -eq "$workers" ] && ! printf '%s\n' "${kids[@]}" | grep -qx "$victim"; then
            for pid in "${kids[@]}"; do
                grep -qx "$pid" "$work/known-pids" && continue
                # Joined: its first snapshot is published before it serves.
                if compgen -G "$groupdir/$pid-*.snap" >/dev/null; then
                    printf '%s\n' "$pid" >>"$work/known-pids"
                    printf '%s\n' "$pid"
                    return 0
                fi
            done
        fi
        sleep 0.1
    done
    return 1
}
printf '%s\n' "${ready_pids[@]}" >"$work/known-pids"

log "bursts of $burst calls (every 6th NotFound) back to back"
mark bursts-start
burst_loop &
bursts_pid=$!
sleep 2
victim="$(pick_victim)" || { show_logs; die "no worker to kill"; }
log "SIGKILL to worker $victim (snapshot $(basename "$groupdir/$victim"-*.snap))"
mark kill
kill -KILL "$victim"
restarted="$(wait_restart "$victim")" || { show_logs; die "worker $victim was not restarted within 20 s"; }
mark restarted
log "the supervisor restarted it as worker $restarted"
sleep 2.5
mark stop-bursts
touch "$work/stop-bursts"
wait_gone "$bursts_pid" 400 || die "the loadgen runs did not stop within 40 s"
wait "$bursts_pid" || true
bursts_pid=""
mark traffic-end
log "bursts: $(wc -l <"$work/bursts.tsv") runs"

# --- Phase C: idle; then SIGKILLs that must change nothing. Each victim is a worker that
# took traffic (a dead worker's zero counts would move nothing), the one whose snapshot
# sorts last: folding it into the archive changes the order in which the sum is added up.
children_of "$server_pid" >"$work/traffic-workers"
sleep 2.5
quiet_victims=() quiet_restarted=()
for kill_number in $(seq "$idle_kills"); do
    quiet_victim="$(pick_victim "$work/traffic-workers")" || { show_logs; die "no worker to kill"; }
    log "idle: SIGKILL to worker $quiet_victim"
    if [ "$kill_number" = 1 ]; then mark quiet-kill; else mark "quiet-kill-$kill_number"; fi
    kill -KILL "$quiet_victim"
    new_pid="$(wait_restart "$quiet_victim")" || { show_logs; die "worker $quiet_victim was not restarted within 20 s"; }
    quiet_victims+=("$quiet_victim") quiet_restarted+=("$new_pid")
    log "restarted as worker $new_pid; waiting for the supervisor to fold $quiet_victim into the archive"
    for _ in $(seq 50); do
        compgen -G "$groupdir/$quiet_victim-*.snap" >/dev/null || break
        sleep 0.1
    done
    sleep 0.6 # then at least two scrapes
done
mark end
touch "$work/stop-monitor"
wait_gone "$monitor_pid" 50 || die "the scraper did not stop"
monitor_pid=""

# --- The checks on everything recorded.
export FIRST_PIDS="[$first_pids]" RESTARTED="$restarted" VICTIM="$victim" BURST="$burst"
export QUIET_VICTIMS="${quiet_victims[*]}" QUIET_RESTARTED="${quiet_restarted[*]}"
status=0
py check || status=1
add_counts "$work/counts"

# The group directory: one snapshot per live process (supervisor and workers), one archive.
mapfile -t snaps < <(cd "$groupdir" && ls -1 -- *.snap 2>/dev/null)
live=("$server_pid" $(children_of "$server_pid"))
stray=()
for file in "${snaps[@]}"; do
    [ "$file" = archive.snap ] && continue
    printf '%s\n' "${live[@]}" | grep -qx "${file%%-*}" || stray+=("$file")
done
ok=FAIL
if [ "${#snaps[@]}" -eq $((workers + 2)) ] && [ "${#stray[@]}" -eq 0 ] && [ -e "$groupdir/archive.snap" ]; then ok=PASS; fi
record "$ok" "group directory" "${#snaps[@]} snapshots (${snaps[*]}) for ${#live[@]} live processes + archive.snap; of dead processes: ${stray[*]:-none}"
# Nor any lock or temporary file of a dead process: folding a dead one removes all its
# files. (A live process' temporary file may be there for an instant, mid-publish.)
mapfile -t others < <(cd "$groupdir" && ls -1 -- *.lock *.tmp 2>/dev/null)
orphans=()
for file in "${others[@]}"; do
    printf '%s\n' "${live[@]}" | grep -qx "${file%%-*}" || orphans+=("$file")
done
locks="$(printf '%s\n' "${others[@]}" | grep -c '\.lock$' || true)"
record "$([ "${#orphans[@]}" -eq 0 ] && [ "$locks" -eq $((workers + 1)) ] && echo PASS || echo FAIL)" "no orphan file" \
    "$locks lock files for ${#live[@]} live processes; lock or temporary files of dead processes: ${orphans[*]:-none}"
restarts="$(grep -c 'worker exited; restarting it' "$work/server.log" || true)"
record "$([ "$restarts" -eq $((1 + idle_kills)) ] && echo PASS || echo FAIL)" "restarts" \
    "the supervisor logged $restarts restarts for the $((1 + idle_kills)) SIGKILLs ($victim -> $restarted; idle: ${quiet_victims[*]} -> ${quiet_restarted[*]})"

# No false alarm: the only warnings expected are the supervisor's, about the workers killed.
mapfile -t warnings < <(grep -E ' (WARN|ERROR) ' "$work/server.log" | grep -v 'worker exited; restarting it' || true)
record "$([ "${#warnings[@]}" -eq 0 ] && echo PASS || echo FAIL)" "no spurious warning" \
    "$([ "${#warnings[@]}" -eq 0 ] && echo "the only warnings logged are the supervisor's $restarts restarts" ||
        printf '%s warning(s) besides the restarts, first: %s' "${#warnings[@]}" "${warnings[0]#* }")"

# --- SIGTERM to the supervisor: all stop within the grace period, nothing left.
mapfile -t last_workers < <(children_of "$server_pid")
log "SIGTERM to the supervisor $server_pid (workers ${last_workers[*]})"
t0="${EPOCHREALTIME//[.,]/}"
kill -TERM "$server_pid"
exited=0
wait_gone "$server_pid" 150 && exited=1
elapsed_ms=$(((${EPOCHREALTIME//[.,]/} - t0) / 1000))
code=""
if [ "$exited" = 1 ]; then
    wait "$server_pid" && code=0 || code=$?
    server_pid=""
fi
record "$([ "$exited" = 1 ] && [ "$code" = 0 ] && [ "$elapsed_ms" -lt 10000 ] && echo PASS || echo FAIL)" "SIGTERM" \
    "the supervisor exited ${code:+with status $code }after $elapsed_ms ms (grace for the workers: 10000 ms)$([ "$exited" = 1 ] || echo '; still running after 15 s')"
left=()
for pid in $(sort -u "$work/worker-pids") "${last_workers[@]}"; do
    if is_our_worker "$pid"; then left+=("$pid"); fi
done
for stat in /proc/[0-9]*/cmdline; do
    pid="${stat#/proc/}"
    pid="${pid%/cmdline}"
    if is_our_worker "$pid" && ! printf '%s\n' "${left[@]}" | grep -qx "$pid"; then left+=("$pid"); fi
done
record "$([ "${#left[@]}" -eq 0 ] && echo PASS || echo FAIL)" "no server process left" \
    "$(sort -u "$work/worker-pids" | wc -l) worker pids seen over the run, ${#left[@]} still running${left[*]:+: ${left[*]}}"

finish "$status" "all checks passed"
