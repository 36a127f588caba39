#!/usr/bin/env bash
# Naming::Grpc against the official implementation: gRPC's own OpenTelemetry metrics
# (gRFC A66) as grpc-python 1.85's plugin (grpcio-observability) exports them through
# OpenTelemetry's Prometheus exporter, side by side with this crate's, for the same fixed
# traffic mix (contrib/a66/official.py's TRAFFIC_MIX), in both exposition formats:
#
#   - server side, same client: the official Python client sends the mix to the official
#     Python server (A66 buckets through SDK Views, --buckets a66) and to the example
#     server (`--naming grpc`, the exporter's defaults); the two servers' /metrics must
#     agree: family names, TYPE, HELP, UNIT, label names, label values (grpc_method with
#     `other`, grpc_status), counters, histogram counts, the size histograms' sums and
#     buckets, and the latency histograms' counts and bucket bounds (`le` compared as
#     numbers), in the Prometheus text format and in OpenMetrics;
#   - client side, same server: the official Python client and examples/a66_client.rs
#     (ClientMetricsLayer with Naming::Grpc and with_target(the target as given, as
#     grpc-python records it)) send the mix to the official server; their /metrics must
#     agree in the same way;
#   - the harness itself: the official client sees the same from both servers, and the
#     official server sees the same from both clients (so both sides sent the same mix).
#
# The differences allowed, and nothing else (see tests/grpc_naming.rs and src/names):
#   - grpc-python's otel_scope_name, otel_scope_version and otel_scope_schema_url labels,
#     and its target_info, python_* and process_* families, are dropped from its side;
#   - the call a 50 ms deadline cuts off (UnaryEcho `sleep:200`): grpc-python's server
#     records it as OK, the crate as DEADLINE_EXCEEDED (as both clients do), so that one
#     call (11 bytes received, 0 sent) is moved from OK to DEADLINE_EXCEEDED in
#     grpc-python's server expectation before comparing;
#   - grpc_client_call_duration_seconds, which the crate records (as grpc-go does) and
#     grpc-python 1.85 does not: checked on its own (labels, counts and bounds equal the
#     attempt duration's), then set aside.
#
#   contrib/a66/a66-e2e.sh
#
# Environment (all optional):
#   A66_VENV          a virtualenv to create or reuse (default: a fresh one in the temporary
#                     directory); requirements.txt is pip-installed into it either way
#                     (a no-op when it already has the pinned versions)
#   A66_PROFILE       debug (default) or release
#   A66_LINGER        seconds the Rust client waits to be scraped at most (default 60)
#   A66_ARTIFACTS     a directory to copy the scrapes, normalized JSON and logs into on exit
#   CARGO_TARGET_DIR  respected, like cargo does.
# Needs cargo, python3 (with venv) and curl, and PyPI for the official side (grpcio,
# grpcio-observability, OpenTelemetry: binary wheels only, pinned in requirements.txt).
# Without PyPI it fails, it does not skip. After the build it takes about 25 s with a
# fresh virtualenv (venv 5 s, pip install 7 to 12 s, the rest 11 s), about 11 s reusing
# one (pip then checks the pins in under 1 s); every wait is bounded. All it starts is stopped, and its temporary directory
# removed, on exit, whatever happens. Prints PASS/FAIL per check and exits non-zero if
# any check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$(pwd)"
here="$repo/contrib/a66"

profile="${A66_PROFILE:-debug}"
linger="${A66_LINGER:-60}"

. contrib/e2e/lib.sh a66-e2e
check_profile A66_PROFILE
require_tools cargo python3 curl timeout

# --- Cleanup: whatever happens from here on, stop what was started and remove the temp dir
# (with A66_ARTIFACTS, copy what it holds there first).
on_cleanup() {
    if [ -n "${A66_ARTIFACTS:-}" ]; then
        mkdir -p "$A66_ARTIFACTS" &&
            find "$work" -maxdepth 1 -type f \( -name '*.txt' -o -name '*.json' -o -name '*.log' -o -name '*.out' \) \
                -exec cp {} "$A66_ARTIFACTS"/ \; || true
    fi
}
start_work tonic-metrics-a66

# --- Build (the default target dir unless CARGO_TARGET_DIR says otherwise).
build_examples server a66_client

# --- The official side: a virtualenv with grpc-python and its OpenTelemetry plugin.
venv="${A66_VENV:-$work/venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >"$work/venv.log" 2>&1 ||
        { cat "$work/venv.log" >&2; die "python3 -m venv $venv failed (Debian: apt-get install python3-venv)"; }
    log "virtualenv created: $venv"
else
    log "virtualenv reused: $venv"
fi
pip_start="${EPOCHREALTIME//[.,]/}"
# Bounded: 20 s per request, 2 retries, 5 minutes in all (the environment may say 180 s).
if ! timeout 300 "$venv/bin/pip" install --disable-pip-version-check --no-input --timeout 20 --retries 2 \
    --only-binary=:all: -r "$here/requirements.txt" >"$work/pip.log" 2>&1; then
    tail -n 15 "$work/pip.log" >&2
    if grep -qiE 'connection|resolution|unreachable|timed out|max retries|ssl|proxy' "$work/pip.log"; then
        die "PyPI is unreachable: the official side (grpcio, grpcio-observability, OpenTelemetry) cannot be installed; this check needs PyPI and does not skip"
    fi
    die "pip install -r contrib/a66/requirements.txt failed (see above); this check does not skip"
fi
pip_seconds="$(elapsed "$pip_start")"
log "pip install: ${pip_seconds} s ($("$venv/bin/python" -c 'from importlib.metadata import version as v; print("grpcio", v("grpcio"), "grpcio-observability", v("grpcio-observability"), "opentelemetry-sdk", v("opentelemetry-sdk"), "opentelemetry-exporter-prometheus", v("opentelemetry-exporter-prometheus"))'))"
py="$venv/bin/python"
official="$here/official.py"
export A66_GEN_DIR="$work/gen" PYTHONDONTWRITEBYTECODE=1
timeout 60 "$py" "$official" --stubs >"$work/stubs.log" 2>&1 ||
    { cat "$work/stubs.log" >&2; die "cannot generate the Python stubs from testing/proto/echo.proto"; }

# --- Helpers.
# scrape URL NAME: NAME.txt (Prometheus text) and NAME.om.txt (OpenMetrics).
scrape() {
    curl -fsS --max-time 10 "$1" >"$work/$2.txt" || { show_logs; die "cannot scrape $1"; }
    curl -fsS --max-time 10 -H 'Accept: application/openmetrics-text; version=1.0.0' "$1" >"$work/$2.om.txt" ||
        { show_logs; die "cannot scrape $1 (OpenMetrics)"; }
}
# wait_calls URL N: the server at URL has recorded N ended calls (grpc-python hands its
# stats over in batches every 0.5 s), within 10 s; then one more batch interval. Not
# fatal: if they never show up, the checks say what is there instead.
wait_calls() {
    python3 - "$1" "$2" <<'PY' || true
import os, sys, time
sys.path.insert(0, os.path.join(os.environ["A66_HERE"]))
import official
url, want = sys.argv[1], int(sys.argv[2])
deadline, seen = time.time() + 10, None
while time.time() < deadline:
    fam = official.normalize(official.fetch(url)).get("grpc_server_call_duration_seconds", {"series": []})
    seen = sum(s.get("count", 0) for s in fam["series"])
    if seen >= want:
        time.sleep(1)
        sys.exit(0)
    time.sleep(0.2)
print(f"a66-e2e: warning: {url} recorded {seen} ended calls in grpc_server_call_duration_seconds, "
      f"not {want}, within 10 s", file=sys.stderr)
PY
}
export A66_HERE="$here"

# --- The two servers, each on ephemeral ports it prints.
start_process py-server "$py" -u "$official" --serve 0 --metrics-port 0 --buckets a66
RUST_LOG=warn start_process rs-server "$bin/server" --naming grpc --host 127.0.0.1 --port 0 --metrics-port 0
# "serving on 127.0.0.1:P, metrics on http://127.0.0.1:M/metrics"
line="$(wait_for_line "$work/py-server.log" '^serving on ')"
py_grpc="$(sed -E 's/^serving on ([^,]+),.*/\1/' <<<"$line")"
py_metrics="$(sed -nE 's|.*metrics on (http://[^ ]+/metrics).*|\1|p' <<<"$line")"
# "gRPC listening on 127.0.0.1:P; metrics on http://127.0.0.1:M/metrics"
line="$(wait_for_line "$work/rs-server.out" '^gRPC listening on ')"
rs_grpc="$(sed -E 's/^gRPC listening on ([^;]+);.*/\1/' <<<"$line")"
rs_metrics="$(sed -nE 's|.*metrics on (http://[^ ]+/metrics).*|\1|p' <<<"$line")"
[ -n "$py_metrics" ] && [ -n "$rs_metrics" ] || die "a server has no metrics listener"
log "official server: gRPC $py_grpc, $py_metrics"
log "crate's server (--naming grpc): gRPC $rs_grpc, $rs_metrics"
scrape "$py_metrics" py-server-before
scrape "$rs_metrics" rs-server-before

# --- 1. The official client: against the official server, then against the crate's.
# It scrapes its own endpoint before and after the mix (--dump: NAME-{before,after}.txt
# and .openmetrics.txt), once its own /metrics counts all 13 calls, plus a second.
official_client() { # target name
    timeout 60 "$py" "$official" --target "$1" --metrics-port 0 --buckets a66 --dump "$work" --dump-name "$2" \
        >"$work/$2.out" 2>"$work/$2.log" || { show_logs; die "the official client against $1 failed"; }
    grep -m1 '^{' "$work/$2.log" >"$work/$2.calls.json" || die "the official client printed no call summary"
}
log "the official client's mix -> the official server"
official_client "$py_grpc" py-client-py-server
wait_calls "$py_metrics" 13
scrape "$py_metrics" py-server-after
log "the official client's mix -> the crate's server"
official_client "$rs_grpc" py-client-rs-server
wait_calls "$rs_metrics" 13
scrape "$rs_metrics" rs-server-after

# --- 2. The crate's client against the official server: it serves its metrics until the
# scrape is done (SIGTERM) or --linger elapses.
log "the crate's client (examples/a66_client.rs) -> the official server"
RUST_LOG=warn start_process rs-client "$bin/a66_client" --target "$py_grpc" --metrics-port 0 --linger "$linger"
rs_client="$!"
rs_client_metrics="$(wait_for_line "$work/rs-client.out" '^metrics on ' | sed -E 's/^metrics on //')"
wait_for_line "$work/rs-client.out" '^TRAFFIC DONE' >/dev/null
grep -m1 '^{' "$work/rs-client.out" >"$work/rs-client.calls.json" || die "the crate's client printed no call summary"
scrape "$rs_client_metrics" rs-client
rs_client_status=0
stop_processes "$rs_client" || rs_client_status=$?
printf '%s\n' "$rs_client_status" >"$work/rs-client.status"
wait_calls "$py_metrics" 26
scrape "$py_metrics" py-server-after-rs-client
log "traffic done; comparing"

# --- Checks: python3 with the standard library and official.py's normalizer and differ.
set +e
python3 - "$work" <<'PY'
import copy, json, os, sys
sys.path.insert(0, os.environ["A66_HERE"])
import official

work = sys.argv[1]
OTEL_LABELS = ("otel_scope_name", "otel_scope_version", "otel_scope_schema_url")
UNARY = "grpc.examples.echo.Echo/UnaryEcho"
CALL_DURATION = "grpc_client_call_duration_seconds"
ATTEMPT_DURATION = "grpc_client_attempt_duration_seconds"
# The call the 50 ms deadline cuts off: UnaryEcho "sleep:200", an 11-byte request
# (field tag, length, 9 bytes of text) and no response.
CUT_REQUEST = 2 + len("sleep:200")
CUT_MOVES = {  # server family: the cut call's observation (None: a latency, count only)
    "grpc_server_call_duration_seconds": None,
    "grpc_server_call_rcvd_total_compressed_message_size_bytes": CUT_REQUEST,
    "grpc_server_call_sent_total_compressed_message_size_bytes": 0,
}
CLIENT_CUT_FAMILIES = (  # the official client's families with a grpc_status label
    "grpc_client_attempt_duration_seconds",
    "grpc_client_attempt_rcvd_total_compressed_message_size_bytes",
    "grpc_client_attempt_sent_total_compressed_message_size_bytes",
)
# tonic's server answers an expired deadline with CANCELLED "Timeout expired" (its timeout
# sits outside user layers); when that answer reaches grpc-python's client before the
# client's own 50 ms timer fires, the client sees CANCELLED, not DEADLINE_EXCEEDED. A race
# between two timers, in tonic and grpc-python, not in the crate's metrics.
TONIC_TIMEOUT = ("CANCELLED", "Timeout expired")

passed, failed = [], []


def check(name, problems, detail):
    ok = not problems
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    for p in problems[:40]:
        print(f"        {p}")
    if len(problems) > 40:
        print(f"        ... and {len(problems) - 40} more")
    (passed if ok else failed).append(name)


def read(name):
    with open(os.path.join(work, name), encoding="utf-8") as f:
        return f.read()


def official_side(name, set_labels=None):
    """grpc-python's exposition: grpc_* families only (target_info, python_* and process_*
    are the SDK's and prometheus_client's), without the SDK's otel_scope_* labels."""
    return official.normalize(read(name), ("grpc_",), "count-only", set_labels, OTEL_LABELS)


def crate_side(name, set_labels=None):
    """The crate's exposition: every family it serves, nothing dropped."""
    return official.normalize(read(name), (), "count-only", set_labels)


def dump(name, data):
    with open(os.path.join(work, name), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)


def series_count(data):
    return sum(len(f["series"]) for f in data.values())


def find(fam, labels):
    key = json.dumps(labels, sort_keys=True)
    return next((s for s in fam["series"] if json.dumps(s["labels"], sort_keys=True) == key), None)


def fold_cancelled_cut_call(data, families=CUT_MOVES):
    """The crate's server records the deadline-cut call as CANCELLED when the client's
    reset reaches it before 50 ms have passed on the layer's clock (which starts when the
    request arrives, after the client's): the rule Go follows too, and a race that CPU
    contention makes likely. Count it where the crate records it otherwise,
    DEADLINE_EXCEEDED, and say so. Returns the note, or None. (With families=
    CLIENT_CUT_FAMILIES: the same fold on the official client's side; the caller words
    the note.)"""
    moved = 0
    for name in families:
        fam = data.get(name)
        if fam is None:
            continue
        cancelled, dead = (next((s for s in fam["series"] if s["labels"].get("grpc_method") == UNARY
                                 and s["labels"].get("grpc_status") == status), None)
                           for status in ("CANCELLED", "DEADLINE_EXCEEDED"))
        if cancelled is None or cancelled.get("count") != 1:
            continue
        if dead is None:
            cancelled["labels"]["grpc_status"] = "DEADLINE_EXCEEDED"
        else:
            dead["count"] += cancelled["count"]
            if "sum" in dead and "sum" in cancelled:
                dead["sum"] += cancelled["sum"]
            if "buckets" in dead and "buckets" in cancelled:
                dead["buckets"] = [[le, a + b] for (le, a), (_, b) in zip(dead["buckets"], cancelled["buckets"])]
            fam["series"].remove(cancelled)
        fam["series"].sort(key=lambda s: json.dumps(s["labels"], sort_keys=True))
        moved += 1
    if moved:
        return ("note: the crate's server recorded the deadline-cut call as CANCELLED (the client's reset arrived "
                "before the server's clock reached the deadline; Go records these as Canceled too): counted as "
                "DEADLINE_EXCEEDED for the comparison")
    return None


def move_cut_call(data):
    """grpc-python's server records the deadline-cut call as OK: move it to
    DEADLINE_EXCEEDED, where the crate (and every client) records it. Returns what was
    seen, for the report, and the problems (nothing to move)."""
    problems, seen = [], {}
    for name, value in CUT_MOVES.items():
        fam = data.get(name)
        if fam is None:
            problems.append(f"{name}: missing on grpc-python's side")
            continue
        ok = find(fam, {"grpc_method": UNARY, "grpc_status": "OK"})
        dead = find(fam, {"grpc_method": UNARY, "grpc_status": "DEADLINE_EXCEEDED"})
        seen[name] = (ok and ok.get("count"), dead and dead.get("count"))
        if ok is None or ok.get("count", 0) < 1:
            problems.append(f"{name}: grpc-python has no UnaryEcho OK observation to move")
            continue
        if dead is None:
            dead = {"labels": {"grpc_method": UNARY, "grpc_status": "DEADLINE_EXCEEDED"}, "count": 0}
            if "le" in ok:
                dead["le"] = list(ok["le"])
            if "buckets" in ok:
                dead["sum"] = 0
                dead["buckets"] = [[le, 0] for le, _ in ok["buckets"]]
            fam["series"].append(dead)
            fam["series"].sort(key=lambda s: json.dumps(s["labels"], sort_keys=True))
        ok["count"] -= 1
        dead["count"] += 1
        if value is not None:
            ok["sum"] -= value
            dead["sum"] += value
            for (le, _), b_ok, b_dead in zip(ok["buckets"], ok["buckets"], dead["buckets"]):
                if value <= official._number(le):
                    if b_ok[1] < 1:
                        problems.append(f"{name}: grpc-python's UnaryEcho OK bucket le={le} holds no {value}-byte call")
                    b_ok[1] -= 1
                    b_dead[1] += 1
    return seen, problems


def drop_family(data, name):
    data = copy.deepcopy(data)
    data.pop(name, None)
    return data


def subtract(after, before):
    """after - before, series by series (counts, sums, buckets, counter values); series
    that did not change are left out."""
    out = {}
    for name, fam in after.items():
        prev = before.get(name, {"series": []})
        series = []
        for s in fam["series"]:
            p = find(prev, s["labels"]) or {}
            d = {"labels": s["labels"]}
            for k in ("count", "sum", "value"):
                if k in s:
                    d[k] = s[k] - p.get(k, 0)
            if "le" in s:
                d["le"] = s["le"]
            if "buckets" in s:
                pb = dict((le, n) for le, n in p.get("buckets", []))
                d["buckets"] = [[le, n - pb.get(le, 0)] for le, n in s["buckets"]]
            if d.get("count", d.get("value", 0)) != 0:
                series.append(d)
        if series:
            out[name] = dict(fam, series=series, labels=sorted({k for s in series for k in s["labels"]}))
    return out


# 1. Every call of the three runs of the mix ended as expected.
problems, detail = [], []
official_client_saw_tonic_timeout = False
for name in ("py-client-py-server", "py-client-rs-server", "rs-client"):
    summary = json.loads(read(f"{name}.calls.json"))
    calls = summary["calls"]
    for c in calls:
        expected = c["expected"] if isinstance(c["expected"], list) else [c["expected"]]
        if (name == "py-client-rs-server" and c is calls[-1]
                and (c["code"], c.get("status_message")) == TONIC_TIMEOUT):
            official_client_saw_tonic_timeout = True
            print(f"      note: {name}: the deadline-cut call came back {c['code']} {c['status_message']!r}: tonic's "
                  "server answered its expired deadline before grpc-python's client timer fired (a race between "
                  "the two timers); accepted, and folded into DEADLINE_EXCEEDED in the official client's metrics below")
            continue
        if c["code"] not in expected:
            problems.append(f"{name}: {c['method']} {c['messages']}: {c['code']} {c.get('status_message', '')!r}, expected {expected}")
    if len(calls) != 13:
        problems.append(f"{name}: {len(calls)} calls, not 13")
    cut = calls[-1]
    detail.append(f"{name} {len(calls)} calls (deadline call: {cut['code']})")
status = read("rs-client.status").strip()
if status != "0":
    problems.append(f"examples/a66_client exited with status {status}")
check("traffic", problems, "; ".join(detail))

# 2. No series before the first call, on either server (A66: nothing is pre-created).
problems = []
for name, side in (("py-server-before", official_side), ("rs-server-before", crate_side)):
    for fmt in (".txt", ".om.txt"):
        families = sorted(side(name + fmt))
        if families:
            problems.append(f"{name}{fmt}: {families}")
check("no series before the first call", problems, "grpc_* families on the official server, any family on the crate's, before traffic: none expected")

# 3-4. Server side: the official client's mix to the official server and to the crate's.
for fmt, label in ((".txt", "text"), (".om.txt", "OpenMetrics")):
    expected = official_side("py-server-after" + fmt)
    actual = crate_side("rs-server-after" + fmt)
    seen, problems = move_cut_call(expected)
    dump(f"server-expected{fmt}.json", expected)
    dump(f"server-actual{fmt}.json", actual)
    note = fold_cancelled_cut_call(actual)
    if note:
        print(f"      {note}")
    problems += official.diff(expected, actual)
    moved = seen.get("grpc_server_call_duration_seconds", (None, None))
    check(f"server ({label})", problems,
          f"the crate's {len(actual)} families, {series_count(actual)} series vs grpc-python's, whose deadline-cut "
          f"call is moved OK -> DEADLINE_EXCEEDED (grpc-python: UnaryEcho OK {moved[0]}, DEADLINE_EXCEEDED {moved[1]})")

# 5-6. Client side: the official client and the crate's, each against the official server.
for fmt, py_fmt, label in ((".txt", ".txt", "text"), (".om.txt", ".openmetrics.txt", "OpenMetrics")):
    expected = official_side("py-client-py-server-after" + py_fmt)
    actual = crate_side("rs-client" + fmt)
    dump(f"client-expected{fmt}.json", expected)
    dump(f"client-actual{fmt}.json", actual)
    problems = official.diff(expected, drop_family(actual, CALL_DURATION))
    targets = sorted({s["labels"].get("grpc_target") for f in actual.values() for s in f["series"]})
    check(f"client ({label})", problems,
          f"the crate's {len(actual) - (CALL_DURATION in actual)} families, {series_count(drop_family(actual, CALL_DURATION))} "
          f"series vs grpc-python's (grpc_target {targets}), {CALL_DURATION} aside")

# 7. grpc.client.call.duration: the crate's only, shaped and counted as the attempt duration.
problems = []
for fmt, py_fmt in ((".txt", ".txt"), (".om.txt", ".openmetrics.txt")):
    if CALL_DURATION in official_side("py-client-py-server-after" + py_fmt):
        problems.append(f"grpc-python now exports {CALL_DURATION}: compare it like the others")
    actual = crate_side("rs-client" + fmt)
    call, attempt = actual.get(CALL_DURATION), actual.get(ATTEMPT_DURATION)
    if call is None or attempt is None:
        problems.append(f"{fmt}: {CALL_DURATION} or {ATTEMPT_DURATION} missing")
        continue
    want = {
        "type": "histogram",
        "help": "End-to-end time taken to complete a call from client's perspective",
        "unit": "seconds" if fmt == ".om.txt" else None,
        "labels": attempt["labels"],
    }
    for field, value in want.items():
        if call.get(field) != value:
            problems.append(f"{fmt}: {field} {call.get(field)!r}, expected {value!r}")
    shape = lambda fam: {json.dumps(s["labels"], sort_keys=True): (s.get("count"), s.get("le")) for s in fam["series"]}
    if shape(call) != shape(attempt):
        problems.append(f"{fmt}: series {shape(call)} != attempt duration's {shape(attempt)}")
check(f"client call duration ({CALL_DURATION})", problems,
      "recorded by the crate only (grpc-python 1.85 has it disabled): same labels, series, counts and bounds as "
      f"{ATTEMPT_DURATION}, HELP as grpc-python's table")

# 8. The harness: the official client sees the same from both servers (target aside).
same_target = {"grpc_target": "TARGET"}
expected = official_side("py-client-py-server-after.txt", same_target)
actual = official_side("py-client-rs-server-after.txt", same_target)
if official_client_saw_tonic_timeout and fold_cancelled_cut_call(actual, CLIENT_CUT_FAMILIES):
    print("      note: the official client's CANCELLED deadline-cut call (see traffic) counted as DEADLINE_EXCEEDED")
check("official client, both servers", official.diff(expected, actual),
      f"the official client's own metrics against the crate's server vs against the official one ({series_count(actual)} series)")

# 9. The harness: the official server sees the same from both clients.
first = subtract(official_side("py-server-after.txt"), official_side("py-server-before.txt"))
second = subtract(official_side("py-server-after-rs-client.txt"), official_side("py-server-after.txt"))
problems = official.diff(first, second)
rcvd = "grpc_server_call_rcvd_total_compressed_message_size_bytes"
a, b = (find(d.get(rcvd, {"series": []}), {"grpc_method": UNARY, "grpc_status": "OK"}) or {} for d in (first, second))
if problems and a.get("count") == b.get("count") and a.get("sum") != b.get("sum"):
    problems.append(f"hint: UnaryEcho OK (which holds the deadline-cut call on grpc-python's server) received {a.get('sum')} "
                    f"bytes from the official client and {b.get('sum')} from the crate's: the deadline-cut call's 11-byte "
                    "request was not counted, cut off before grpc-python's server read it (or before the client sent "
                    "it); seen under heavy CPU contention")
check("official server, both clients", problems,
      f"what the official server records for the crate's client's mix vs for the official client's ({series_count(second)} series)")

# Not a check: `le` is compared as a number (its spelling is each exporter's float
# formatting); say how it is spelled on each side.
def le_spellings(text):
    out = {}
    for name, fam in official.normalize(text).items():
        for s in fam["series"]:
            if "buckets" in s:
                unit = "seconds" if name.endswith("_seconds") else "bytes"
                out.setdefault(unit, [le for le, _ in s["buckets"]])
    return out
for fmt, py_fmt, label in ((".txt", ".txt", "text"), (".om.txt", ".om.txt", "OpenMetrics")):
    py_le, rs_le = le_spellings(read("py-server-after" + py_fmt)), le_spellings(read("rs-server-after" + fmt))
    for unit in sorted(set(py_le) | set(rs_le)):
        pairs = [(a, b) for a, b in zip(py_le.get(unit, []), rs_le.get(unit, [])) if a != b]
        if pairs:
            shown = ", ".join(f"{a} / {b}" for a, b in pairs[:4]) + (", ..." if len(pairs) > 4 else "")
            print(f"note  le spelling ({label}, {unit}): {len(pairs)} of {len(py_le.get(unit, []))} bounds differ "
                  f"(grpc-python / crate): {shown}")

with open(os.path.join(work, "counts"), "w") as f:
    f.write(f"{len(passed)} {len(failed)}\n")
PY
set -e
add_counts "$work/counts"
log "pip install took ${pip_seconds} s"
finish
