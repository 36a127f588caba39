#!/usr/bin/env bash
# Dashboards and alerts that others wrote for Go's go-grpc-prometheus, run unchanged
# against tonic-metrics on a real Prometheus: the expressions of
# contrib/e2e/ecosystem/queries.yml (the etcd and Thanos mixins, awesome-prometheus-alerts,
# go-grpc-prometheus' README, the "gRPC Metrics" Grafana dashboard, GitLab.com's Gitaly
# rules, ...; each with its source and licence there) are sent to Debian's `prometheus`
# (2.42) through its HTTP API as instant queries, with only their job selectors and
# Grafana variables substituted.
#
#   phase 1, healthy: the example server gets only successful UnaryEcho calls (one a second
#     for E2E_ROUNDS seconds) while Prometheus scrapes it every second. Every expression
#     must return data: a flat 0 (or NaN, a ratio of zeros) counts, "No data" does not,
#     as a Go server that pre-registers its methods (InitializeMetrics) shows 0. Alerts
#     must not fire; their signal (the expression up to its threshold) must return data.
#   phase 2, first failure: exactly one UnaryEcho call fails with each of Internal,
#     Unavailable and ResourceExhausted, and one runs into its 100 ms deadline
#     (DeadlineExceeded). The error panels must now show a value > 0 and the error alerts
#     must fire: a code's first error is a step from 0, which rate() and increase() see
#     only if the series was there, at 0, before it. The deadline call comes from loadgen
#     (--deadline-ms): tonic's client enforces the deadline too and resets the stream when
#     its own timer, started before the request left, expires; on a loaded machine that
#     reset can reach the server more than the layer's 1 ms slack before the server's own
#     deadline, and the server counts the call Canceled (a Go server has the same race: the
#     reset cancels its context first). When that happens, one more call with the same
#     deadline is sent with curl, which does not enforce it, so the server's deadline
#     decides; one call must be counted DeadlineExceeded. The alerts fire either way.
#   Expressions that legitimately return nothing (another product's service names, a
#   bucket go-grpc-prometheus does not have) say why in `expected:` and must be empty.
#
# The client side comes from the demo example (an instrumented client driving its own
# echo server with deliberately mixed traffic, errors included, for E2E_DEMO_SECONDS); its
# job keeps only the client's series (grpc_server_* is dropped at scrape time), so the
# server-side expressions, including those without any job selector, see the healthy
# example server only. Client-side alerts are therefore not judged, only their signals.
#
# A NOTE line shows the `le` values Prometheus stored for the server's buckets next to a
# default Go server's (promhttp without EnableOpenMetrics is scraped in the text format:
# le="1", "5", "10"): expressions that select a bucket by its text, such as le="1", find
# it only if the two agree. E2E_FORMAT=text scrapes the text format instead.
#
#   contrib/e2e/ecosystem-e2e.sh
#
# Environment (all optional):
#   E2E_PROFILE       debug (default) or release
#   E2E_ROUNDS        seconds of healthy traffic, one successful call each (default 20; at
#                     most 50, or the 3 failures Thanos' store alert counts are under its 5%)
#   E2E_DEMO_SECONDS  how long the demo's client sends its traffic (default 10)
#   E2E_FORMAT        negotiated (default: Prometheus 2.42 asks for OpenMetrics, and gets
#                     it) or text (both jobs scrape /metrics?format=text, the format a
#                     default Go server, promhttp without EnableOpenMetrics, answers in)
#   PROMETHEUS        the server binary (default: `prometheus` on PATH; installed from
#                     Debian when missing and running as root)
#   CARGO_TARGET_DIR  respected, like cargo does.
# Needs cargo, python3 (standard library only) and curl. After the build it takes about
# 35 s; every wait is bounded. All it starts is stopped, and its temporary directory
# removed, on exit, whatever happens. Prints PASS/FAIL per check and
# `ecosystem-e2e: N passed, M failed`; exits non-zero if any check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$(pwd)"

profile="${E2E_PROFILE:-debug}"
rounds="${E2E_ROUNDS:-20}"
demo_seconds="${E2E_DEMO_SECONDS:-10}"
format="${E2E_FORMAT:-negotiated}"
server_job="ecosystem-server"
client_job="ecosystem-client"
queries="$repo/contrib/e2e/ecosystem/queries.yml"

. contrib/e2e/lib.sh ecosystem-e2e
check_profile E2E_PROFILE
case "$format" in
    negotiated) params="" ;;
    text) params="    params: {format: [text]}" ;;
    *) die "E2E_FORMAT must be negotiated or text, not '$format'" ;;
esac
case "$rounds" in
    '' | *[!0-9]*) die "E2E_ROUNDS must be a number, not '$rounds'" ;;
esac
[ "$rounds" -ge 5 ] && [ "$rounds" -le 50 ] || die "E2E_ROUNDS must be within 5..50, not $rounds"
require_tools cargo python3 curl
[ -f "$queries" ] || die "no $queries"
find_prometheus
start_work tonic-metrics-ecosystem-e2e

# Queries, checks and waits: python3 with the standard library only. The first argument
# is the command; queries.yml is read with a small parser of the YAML subset it is
# written in (single-quoted or plain one-line scalars, `[...]` pairs of single-quoted
# strings), which refuses anything else.
export PROM="" SERVER_JOB="$server_job" CLIENT_JOB="$client_job" QUERIES="$queries" WORK="$work"
py() { python3 - "$@" <<'PY'
import collections, math, os, re, sys, urllib.error
from prom_api import api, active_targets, wait_scraped, wait_up

SELECTOR_LABELS = {"job", "instance", "cluster", "namespace", "name", "prometheus"}
FIELDS = {"id", "source", "name", "kind", "side", "expr", "substitutions", "signal",
          "healthy", "failing", "expected", "note"}
QUOTED = re.compile(r"'((?:[^']|'')*)'")

def unquote(text, where):
    text = text.strip()
    if text.startswith("'"):
        m = QUOTED.fullmatch(text)
        if not m:
            raise SystemExit(f"{where}: bad single-quoted scalar: {text}")
        return m.group(1).replace("''", "'")
    if text[:1] in ('"', "[", "{", "|", ">", "&", "*", "!", "%", "@", "`") or " #" in text:
        raise SystemExit(f"{where}: unsupported scalar: {text}")
    return text

def load(path):
    items, item, list_key = [], None, None
    for n, raw in enumerate(open(path, encoding="utf-8"), 1):
        where = f"{path}:{n}"
        line = raw.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line == "queries:":
            continue
        m = re.fullmatch(r"(- |  )([a-z_]+):(?: (.*))?", line)
        if m:
            if m.group(1) == "- ":
                item = {}
                items.append(item)
            elif item is None:
                raise SystemExit(f"{where}: field outside an item")
            key, value = m.group(2), m.group(3)
            if key not in FIELDS or key in item:
                raise SystemExit(f"{where}: unknown or repeated field {key}")
            if value is None:
                item[key], list_key = [], key
            else:
                item[key], list_key = unquote(value, where), None
            continue
        m = re.fullmatch(r"  - \[(.*)\]", line)
        if m and list_key == "substitutions":
            pair = [s.replace("''", "'") for s in QUOTED.findall(m.group(1))]
            if len(pair) != 2 or QUOTED.sub("", m.group(1)).strip() != ",":
                raise SystemExit(f"{where}: a substitution is ['from', 'to']")
            item[list_key].append(pair)
            continue
        raise SystemExit(f"{where}: cannot parse: {line}")
    return items

def fold(text):
    return " ".join(text.split())

# Metric names, and label matchers other than the selectors, must be the same before and
# after the substitutions: nothing but selectors and variables is rewritten.
def invariants(expr):
    names = collections.Counter(re.findall(r"\bgrpc_[a-z_]+\b", expr))
    matchers = collections.Counter(
        (label, op, value) for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', expr)
        if label not in SELECTOR_LABELS)
    return names, matchers

def prepare(items):
    seen = set()
    for q in items:
        qid = q.get("id", "?")
        for key in ("id", "source", "name", "kind", "side", "expr"):
            if not q.get(key):
                raise SystemExit(f"queries.yml: {qid}: no {key}")
        if qid in seen:
            raise SystemExit(f"queries.yml: duplicate id {qid}")
        seen.add(qid)
        if q["kind"] not in ("panel", "alert", "record", "example") or q["side"] not in ("server", "client"):
            raise SystemExit(f"queries.yml: {qid}: bad kind or side")
        expected = q.get("expected")
        if expected is not None and not expected.startswith("no data, because "):
            raise SystemExit(f"queries.yml: {qid}: expected must say 'no data, because ...'")
        if expected is None:
            allowed = {"data", "any", "positive"} | ({"quiet", "fires"} if q["kind"] == "alert" else set())
            for phase in ("healthy", "failing"):
                if q.get(phase) not in allowed:
                    raise SystemExit(f"queries.yml: {qid}: {phase} must be one of {sorted(allowed)}")
        if (q["kind"] == "alert") != ("signal" in q) and expected is None:
            raise SystemExit(f"queries.yml: {qid}: alerts, and only alerts, have a signal")
        if "signal" in q and fold(q["signal"]) not in fold(q["expr"]):
            raise SystemExit(f"queries.yml: {qid}: the signal is not part of the expression")

        def substitute(text):
            for old, new in q.get("substitutions", []):
                if old not in text:
                    raise SystemExit(f"queries.yml: {qid}: substitution {old!r} matches nothing")
                new = new.replace("<server_job>", os.environ["SERVER_JOB"]).replace("<client_job>", os.environ["CLIENT_JOB"])
                text = text.replace(old, new)
            if re.search(r"\$\w|<\w+_job>|\{\{", text):
                raise SystemExit(f"queries.yml: {qid}: a variable is left: {text}")
            return text

        q["query"] = substitute(q["expr"])
        if invariants(q["query"]) != invariants(q["expr"]):
            raise SystemExit(f"queries.yml: {qid}: a substitution changed a metric name or a label value")
        if "signal" in q:
            q["signal_query"] = substitute(q["signal"])
    return items

def get(path, post=False, **params):
    return api(os.environ["PROM"], path, post=post, **params)

def query(expr):
    try:
        data = get("/api/v1/query", post=True, query=expr)  # POST: some queries are long
    except urllib.error.HTTPError as error:
        return None, f"HTTP {error.code}: {error.read().decode(errors='replace')[:300]}"
    return data["result"], None

def targets():
    return active_targets(os.environ["PROM"])

def describe(result):
    if result is None:
        return "error"
    if not result:
        return "no data"
    values = [float(r["value"][1]) for r in result]
    numbers = [v for v in values if not math.isnan(v)]
    nans = len(values) - len(numbers)
    text = f"{len(values)} series"
    if numbers:
        low, high = min(numbers), max(numbers)
        text += f", {low:.4g}" if low == high else f", {low:.4g} to {high:.4g}"
    return text + (f" ({nans} NaN)" if nans else "")

def judge(expectation, result):
    """Whether `result` meets `expectation` (data, quiet, positive, fires, any, empty)."""
    if result is None:
        return False
    values = [float(r["value"][1]) for r in result]
    return {
        "any": True,
        "data": bool(result),
        "quiet": not result,
        "empty": not result,
        "fires": bool(result),
        "positive": any(v > 0 and not math.isnan(v) for v in values),
    }[expectation]

command = sys.argv[1]
if command == "validate":
    items = prepare(load(os.environ["QUERIES"]))
    sources = collections.Counter(q["source"].split()[0] for q in items)
    expected = sum(1 for q in items if q.get("expected"))
    print(f"{len(items)} expressions from {len(sources)} sources "
          f"({', '.join(f'{s} {n}' for s, n in sources.items())}); {expected} expected empty")
elif command == "wait-up":
    wait_up(targets, 2, "both targets up")
elif command == "wait-scraped":
    wait_scraped(targets, float(sys.argv[2]))
elif command in ("recorded", "code-count"):
    # The server's own /metrics, before Prometheus: UnaryEcho's handled_total by code.
    text = urllib.request.urlopen(f"http://{sys.argv[2]}/metrics", timeout=5).read().decode()
    counts = {}
    for line in text.splitlines():
        m = re.match(r'grpc_server_handled_total\{(.*)\} (\S+)$', line)
        if m and 'grpc_method="UnaryEcho"' in m.group(1):
            code = re.search(r'grpc_code="(\w+)"', m.group(1)).group(1)
            counts[code] = float(m.group(2))
    if command == "code-count":
        print(int(counts.get(sys.argv[3], 0)))
        sys.exit(0)
    # Each failure counted once, by its code; the deadline calls but the last raced the
    # client's timer (Canceled), the last one is DeadlineExceeded.
    raced = int(sys.argv[3]) - 1
    want = {"Internal": 1.0, "Unavailable": 1.0, "ResourceExhausted": 1.0, "DeadlineExceeded": 1.0, "Canceled": float(raced)}
    got = {c: counts.get(c) for c in want}
    zeros = sum(1 for c, v in counts.items() if v == 0)
    ok = got == want and len(counts) == 17
    print(f"{'PASS' if ok else 'FAIL'}  [failing] server /metrics: UnaryEcho handled by code {got} "
          f"(want Canceled {raced} and 1 of each other), {len(counts)} codes exported, {zeros} still at 0, "
          f"OK {counts.get('OK')}")
    with open(os.path.join(os.environ["WORK"], "counts"), "a") as f:
        f.write("1 0\n" if ok else "0 1\n")
elif command == "check":
    phase = sys.argv[2]  # healthy | failing
    items = prepare(load(os.environ["QUERIES"]))
    passed = failed = 0
    by_source = collections.defaultdict(lambda: [0, 0])
    for q in items:
        checks = []
        if q.get("expected"):
            checks.append(("expr", q["query"], "empty", q["expected"]))
        else:
            checks.append(("expr", q["query"], q[phase], ""))
            if "signal_query" in q:
                checks.append(("signal", q["signal_query"], "data", ""))
        for part, expr, expectation, why in checks:
            result, error = query(expr)
            ok = judge(expectation, result)
            label = f"{q['id']}" + (" (signal)" if part == "signal" else "")
            detail = error or describe(result)
            print(f"{'PASS' if ok else 'FAIL'}  [{phase}] {label}: {expectation}: {detail}"
                  + (f" ({why})" if why else ""))
            if not ok:
                print(f"      {q['source']}: {q['name']}\n      query: {expr}")
            passed, failed = passed + ok, failed + (not ok)
            by_source[q["source"].split()[0]][0 if ok else 1] += 1
    print(f"[{phase}] by source: " + "; ".join(f"{s} {p}/{p + f}" for s, (p, f) in by_source.items()))
    if phase == "healthy":
        # Expressions that select a bucket by its `le` text (le="1") find it only if the
        # spelling stored matches. A default Go server (promhttp, EnableOpenMetrics false)
        # is scraped in the text format and stores Go's %g spelling (1, 5, 10); a target
        # that negotiates OpenMetrics with Prometheus 2.x stores the canonical 1.0, 5.0, 10.0.
        result, _ = query(f'count by (le) (grpc_server_handling_seconds_bucket{{job="{os.environ["SERVER_JOB"]}"}})')
        stored = sorted((r["metric"]["le"] for r in result or []), key=lambda le: float(le))
        go = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
        print(f"NOTE  le values stored for the server's buckets: {', '.join(stored)}"
              + ("" if stored == go else f"; a default Go server's: {', '.join(go)}"))
    with open(os.path.join(os.environ["WORK"], "counts"), "a") as f:
        f.write(f"{passed} {failed}\n")
else:
    raise SystemExit(f"unknown command {command}")
PY
}

# Before anything is built or started: the file parses, every substitution applies, and
# none touches a metric name or a label value.
summary="$(py validate)" || exit 1
log "queries: $summary"

# --- Build (the default target dir unless CARGO_TARGET_DIR says otherwise).
build_examples server loadgen demo

# --- The example server and the demo. Port 0 for every listener: each binds an ephemeral
# port and prints it in its ready line, so there is no race between picking and binding.
RUST_LOG=warn start_process server "$bin/server" --host 127.0.0.1 --port 0 --metrics-port 0
RUST_LOG=warn start_process demo "$bin/demo" --port 0 --metrics-port 0 --duration "$demo_seconds"
line="$(wait_for_line "$work/server.out" '^gRPC listening on ' server)"
grpc="$(sed -E 's/^gRPC listening on ([^;]+);.*/\1/' <<<"$line")"
metrics="$(sed -nE 's|.*metrics on http://([^/]+)/metrics.*|\1|p' <<<"$line")"
demo_metrics="$(wait_for_line "$work/demo.out" '^gRPC on ' demo | sed -nE 's|.*metrics on http://([^/]+)/metrics.*|\1|p')"
[ -n "$metrics" ] || die "the server has no metrics listener: '$line'"
[ -n "$demo_metrics" ] || die "the demo printed no metrics address"
log "server: gRPC $grpc, metrics $metrics; demo: metrics $demo_metrics (client traffic for ${demo_seconds} s)"

# --- Prometheus on a free loopback port, scraping both every second. The demo's job keeps
# only the client's series: its own server's series (the same methods, under the demo's
# mixed traffic) would otherwise join the healthy server's in expressions without a job.
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: $server_job
$params
    static_configs:
      - targets: ['$metrics']
  - job_name: $client_job
$params
    static_configs:
      - targets: ['$demo_metrics']
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'grpc_server_.*'
        action: drop
EOF
start_prometheus prometheus
prom="${prom_url[prometheus]}"
export PROM="$prom"
log "prometheus $(prometheus_version) on $prom (exposition format: $format)"
py wait-up || { show_logs; exit 1; }
log "both targets up"

loadgen() {
    timeout 30 "$bin/loadgen" --target "$grpc" --concurrency 1 --threads 1 --json "$@" \
        2>>"$work/loadgen.log" | tail -n 1
}
# The codes of a loadgen JSON line, e.g. {"OK":1}.
codes() { python3 -c 'import json, sys; print(json.dumps(json.loads(sys.stdin.read())["codes"], separators=(",", ":")))'; }

# --- Phase 1: healthy. One successful call a second (5 ms on the server).
log "phase 1: $rounds s of successful UnaryEcho calls, one a second"
ok_calls=0
for round in $(seq "$rounds"); do
    next=$((${EPOCHREALTIME//[.,]/} + 1000000))
    got="$(loadgen --requests 1 --sleep-ms 5)" || { show_logs; die "loadgen failed in round $round"; }
    [ "$(codes <<<"$got")" = '{"OK":1}' ] || { show_logs; die "a healthy call failed: $got"; }
    ok_calls=$((ok_calls + 1))
    left=$((next - ${EPOCHREALTIME//[.,]/}))
    [ "$left" -le 0 ] || sleep "$(printf '0.%06d' "$left")"
done
py wait-scraped "$(date +%s.%N)" || { show_logs; exit 1; }
log "phase 1: $ok_calls successful calls scraped; evaluating"
status=0
: >"$work/counts"
py check healthy || status=1

# --- Phase 2: the first failure of each code, one call each.
log "phase 2: one UnaryEcho call failing with each of Internal, Unavailable, ResourceExhausted, and one past its deadline"
for code in Internal Unavailable ResourceExhausted; do
    got="$(loadgen --requests 1 --error-every 1 --error-code "$code")" || { show_logs; die "loadgen failed"; }
    [ "$(codes <<<"$got")" = "{\"$code\":1}" ] || { show_logs; die "the $code call came back as $got"; }
done
# A 100 ms deadline on a 500 ms call: cut off at the deadline, counted DeadlineExceeded by
# the server (the client, whose own tonic timer fires, sees Canceled). See above for the race.
got="$(loadgen --requests 1 --sleep-ms 500 --deadline-ms 100)" || { show_logs; die "loadgen failed"; }
case "$(codes <<<"$got")" in
    '{"OK":1}') show_logs; die "the call with a 100 ms deadline on a 500 ms call succeeded" ;;
esac
sleep 0.2
deadline_calls=1
if [ "$(py code-count "$metrics" DeadlineExceeded)" = 0 ] && [ "$(py code-count "$metrics" Canceled)" = 1 ]; then
    log "the deadline call raced the client's own timer (counted Canceled); one more, sent with curl"
    # One UnaryEcho call, gRPC-framed by hand: EchoRequest{message: "sleep:500"}.
    printf '\x00\x00\x00\x00\x0b\x0a\x09sleep:500' >"$work/deadline.bin"
    curl -sS -o /dev/null -D "$work/deadline.headers" --max-time 5 --http2-prior-knowledge \
        -H 'content-type: application/grpc' -H 'te: trailers' -H 'grpc-timeout: 100m' \
        --data-binary @"$work/deadline.bin" "http://$grpc/grpc.examples.echo.Echo/UnaryEcho" ||
        { show_logs; die "curl could not send the deadline call (does it speak HTTP/2?)"; }
    grep -qi '^grpc-status: *[1-9]' "$work/deadline.headers" ||
        { cat "$work/deadline.headers" >&2; die "the curl call with a 100 ms deadline did not fail"; }
    deadline_calls=2
    sleep 0.2
fi
py recorded "$metrics" "$deadline_calls" || status=1
py wait-scraped "$(date +%s.%N)" || { show_logs; exit 1; }
log "phase 2: failures scraped; evaluating"
py check failing || status=1

add_counts "$work/counts"
finish "$status"
