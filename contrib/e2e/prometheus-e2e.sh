#!/usr/bin/env bash
# End to end against a real Prometheus: two instances of the example server (a small
# fleet), Debian's `prometheus` scraping both every second with contrib/prometheus's
# rules loaded, traffic from the loadgen example, then the HTTP API's answers checked
# against what the load generator says it sent:
#
#   - requests: sum(grpc_server_handled_total) over both instances equals the requests
#     sent (and started = handled), each instance's count by code equals what was sent
#     to it, and increase() over the run roughly agrees;
#   - error ratio by code: sum by (grpc_code) (grpc_server_handled_total) equals the codes
#     the client saw;
#   - latency: histogram_quantile(0.99, sum by (le) (rate(..._bucket[1m]))) across both
#     instances lands in the bucket the requested server-side sleep falls in;
#   - the recording rules (grpc:server_requests:rate5m, grpc:server_errors:ratio_rate5m,
#     grpc:server_handling_seconds:p99_5m) and the GrpcServerHighErrorRatio alert
#     (pending: its "for" is 5m) agree;
#   - every query of contrib/grafana/grpc-dashboard.json runs on this Prometheus and
#     returns data (a third target, the demo example, has client-side metrics).
#
#   contrib/e2e/prometheus-e2e.sh
#
# Environment (all optional):
#   E2E_PROFILE       debug (default) or release. Debug: CI has already built the debug
#                     dependencies, and a few thousand requests need no optimiser.
#   E2E_REQUESTS      requests in the main run (default 3000)
#   E2E_CONCURRENCY   calls in flight (default 128)
#   E2E_SLEEP_MS      server-side sleep of the non-failing requests (default 150: the p99
#                     must land in (0.1, 0.25], which leaves 100 ms for scheduling delays
#                     on a busy 2-core machine; 30 ms, with (0.025, 0.05], failed there
#                     with three CPU hogs running)
#   E2E_ERROR_EVERY   every K-th request fails (default 5: odd, so round-robin over two
#                     servers sends errors to both)
#   E2E_ERROR_CODE    the code they fail with (default Internal)
#   PROMETHEUS        the server binary (default: `prometheus` on PATH; installed from
#                     Debian when missing and running as root)
#   CARGO_TARGET_DIR  respected, like cargo does.
# Needs cargo, python3 (standard library only) and curl. After the build it takes about
# 15 s (Prometheus alone needs 6 s to scrape new targets); every wait is bounded. All it
# starts is stopped, and its temporary directory removed, on exit, whatever happens.
# Prints PASS/FAIL per check and exits non-zero if any check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$(pwd)"

profile="${E2E_PROFILE:-debug}"
requests="${E2E_REQUESTS:-3000}"
concurrency="${E2E_CONCURRENCY:-128}"
sleep_ms="${E2E_SLEEP_MS:-150}"
error_every="${E2E_ERROR_EVERY:-5}"
error_code="${E2E_ERROR_CODE:-Internal}"
job="tonic-metrics-e2e"

. contrib/e2e/lib.sh e2e
check_profile E2E_PROFILE
require_tools cargo python3 curl
find_prometheus
start_work tonic-metrics-e2e

# --- Build (the default target dir unless CARGO_TARGET_DIR says otherwise).
build_examples server loadgen demo

# --- Two servers. Port 0 for both listeners: each binds an ephemeral port and prints
# it in its ready line, so there is no race between picking a port and binding it.
RUST_LOG=warn start_process server1 "$bin/server" --host 127.0.0.1 --port 0 --metrics-port 0
RUST_LOG=warn start_process server2 "$bin/server" --host 127.0.0.1 --port 0 --metrics-port 0
# The demo (server and instrumented client in one process, 2 s of mixed traffic) gives
# the dashboard's client panels something to show; it is a job of its own, so the exact
# checks below, all on the two servers' job, do not see it.
RUST_LOG=warn start_process demo "$bin/demo" --port 0 --metrics-port 0 --duration 2
line1="$(wait_for_line "$work/server1.out" '^gRPC listening on ' server1)"
line2="$(wait_for_line "$work/server2.out" '^gRPC listening on ' server2)"
demo_metrics="$(wait_for_line "$work/demo.out" '^gRPC on ' demo | sed -nE 's|.*metrics on http://([^/]+)/metrics.*|\1|p')"
[ -n "$demo_metrics" ] || die "the demo printed no metrics address"
# "gRPC listening on 127.0.0.1:P; metrics on http://127.0.0.1:M/metrics"
grpc1="$(sed -E 's/^gRPC listening on ([^;]+);.*/\1/' <<<"$line1")"
grpc2="$(sed -E 's/^gRPC listening on ([^;]+);.*/\1/' <<<"$line2")"
metrics1="$(sed -nE 's|.*metrics on http://([^/]+)/metrics.*|\1|p' <<<"$line1")"
metrics2="$(sed -nE 's|.*metrics on http://([^/]+)/metrics.*|\1|p' <<<"$line2")"
if [ -z "$metrics1" ] || [ -z "$metrics2" ]; then
    die "a server has no metrics listener: '$line1' / '$line2'"
fi
log "server1: gRPC $grpc1, metrics $metrics1"
log "server2: gRPC $grpc2, metrics $metrics2"
log "demo: metrics $demo_metrics"

# --- Prometheus on a free loopback port, scraping the three every second, with our rules.
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - '$repo/contrib/prometheus/grpc-rules.yml'
scrape_configs:
  - job_name: $job
    static_configs:
      - targets: ['$metrics1', '$metrics2']
  - job_name: $job-demo
    static_configs:
      - targets: ['$demo_metrics']
EOF
start_prometheus prometheus
prom="${prom_url[prometheus]}"
log "prometheus $(prometheus_version) on $prom"

# Queries, waits and checks: python3 with the standard library only.
export PROM="$prom" JOB="$job" GRPC1="$grpc1" GRPC2="$grpc2" METRICS1="$metrics1" METRICS2="$metrics2"
export SLEEP_MS="$sleep_ms" WORK="$work"
py() { python3 - "$@" <<'PY'
import json, os, sys, time
from prom_api import api, active_targets, rfc3339 as ts, wait, wait_scraped, wait_up

PROM, JOB = os.environ["PROM"], os.environ["JOB"]

def get(path, **params):
    return api(PROM, path, **params)

def targets(job=JOB):
    return [t for t in active_targets(PROM) if job is None or t["labels"].get("job") == job]

command = sys.argv[1]
if command == "wait-up":
    wait_up(lambda: targets(None), 3, "all three targets up")
elif command == "wait-scraped":
    # Both targets scraped (and the rules evaluated) after the given time.
    wait_scraped(targets, float(sys.argv[2]))
    seen = time.time()
    def evaluated():
        groups = get("/api/v1/rules")["groups"]
        mine = [g for g in groups if g["name"] in ("grpc-server.rules", "grpc.alerts")]
        return len(mine) == 2 and all(ts(g["lastEvaluation"]) > seen for g in mine)
    wait("a rule evaluation after that scrape", evaluated, 10)
elif command == "check":
    run_files = sys.argv[2:]
    runs = []
    for path in run_files:
        lines = [l for l in open(path).read().splitlines() if l.strip()]
        runs.append(json.loads(lines[-1]))
    sent = sum(r["requests"] for r in runs)
    codes, per_target = {}, {}
    for r in runs:
        for code, n in r["codes"].items():
            codes[code] = codes.get(code, 0) + n
        for addr, by_code in r.get("per_target", {}).items():
            for code, n in by_code.items():
                per_target.setdefault(addr, {}).setdefault(code, 0)
                per_target[addr][code] += n
    instance_of = {os.environ["GRPC1"]: os.environ["METRICS1"], os.environ["GRPC2"]: os.environ["METRICS2"]}
    sleep = int(os.environ["SLEEP_MS"]) / 1000
    bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    # The bucket the sleep falls in: its latency is a little over the sleep.
    upper = next(b for b in bounds if b > sleep)
    lower = max([0] + [b for b in bounds if b <= sleep])
    # p99 interpolates near the top of the sleep's bucket, so a few calls delayed past it
    # on a busy machine move it one bucket up: allow that, and check the bucket itself holds
    # at least 95% of the calls slower than `lower` (exact, from the counters).
    upper_p99 = next(b for b in bounds if b > upper)
    errors = sum(n for c, n in codes.items() if c != "OK")
    sel = f'job="{JOB}"'

    def query(expr):
        return get("/api/v1/query", query=expr)["result"]

    def scalar(expr):  # NaN for no result: every comparison with it fails
        result = query(expr)
        return float(result[0]["value"][1]) if result else float("nan")

    failures, passes = [], []
    def check(name, ok, detail):
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        (passes if ok else failures).append(name)

    # (a) requests: exact, from the counters.
    handled = scalar(f"sum(grpc_server_handled_total{{{sel}}})")
    started = scalar(f"sum(grpc_server_started_total{{{sel}}})")
    check("requests", handled == sent and started == sent,
          f"sum(grpc_server_handled_total) = {handled:g}, sum(grpc_server_started_total) = {started:g}, loadgen sent {sent}")
    by_instance = {}
    for r in query(f"sum by (instance, grpc_code) (grpc_server_handled_total{{{sel}}}) > 0"):
        by_instance.setdefault(r["metric"]["instance"], {})[r["metric"]["grpc_code"]] = int(float(r["value"][1]))
    expected_by_instance = {instance_of[a]: c for a, c in per_target.items()}
    check("both instances", len(by_instance) == 2
          and (not expected_by_instance or by_instance == expected_by_instance),
          f"sum by (instance, grpc_code) = {by_instance}, loadgen per target {expected_by_instance or 'n/a'}")
    # The rate functions over the whole run: extrapolated, so only roughly equal.
    increase = scalar(f"sum(increase(grpc_server_handled_total{{{sel}}}[5m]))")
    rate = scalar(f"sum(rate(grpc_server_handled_total{{{sel}}}[5m]))")
    check("increase() sanity", 0.95 * sent <= increase <= 1.5 * sent,
          f"sum(increase(grpc_server_handled_total[5m])) = {increase:.1f} (rate {rate:.3f}/s over 5m), sent {sent}")

    # (b) error ratio by code: exact, from the counters.
    got_codes = {r["metric"]["grpc_code"]: int(float(r["value"][1]))
                 for r in query(f"sum by (grpc_code) (grpc_server_handled_total{{{sel}}}) > 0")}
    ratio = scalar(f'sum(grpc_server_handled_total{{{sel},grpc_code!="OK"}}) / sum(grpc_server_handled_total{{{sel}}})')
    check("codes", got_codes == codes, f"sum by (grpc_code) = {got_codes}, loadgen saw {codes}")
    check("error ratio", abs(ratio - errors / sent) < 1e-12,
          f"{ratio:.4f} from Prometheus, {errors}/{sent} = {errors / sent:.4f} sent")

    # (c) latency: p99 across both instances, the dashboard's query.
    p99 = scalar(f"histogram_quantile(0.99, sum by (le) (rate(grpc_server_handling_seconds_bucket{{{sel},grpc_method=\"UnaryEcho\"}}[1m])))")
    p99_all = scalar(f"histogram_quantile(0.99, sum by (le) (grpc_server_handling_seconds_bucket{{{sel},grpc_method=\"UnaryEcho\"}}))")
    contributing = query(f"count by (instance) (grpc_server_handling_seconds_count{{{sel},grpc_method=\"UnaryEcho\"}} > 0)")
    buckets = {r["metric"]["le"]: float(r["value"][1])
               for r in query(f"sum by (le) (grpc_server_handling_seconds_bucket{{{sel},grpc_method=\"UnaryEcho\"}})")}
    total = buckets.get("+Inf", 0)
    def upto(bound):
        return next((v for le, v in buckets.items() if le != "+Inf" and abs(float(le) - bound) < 1e-9), 0)
    spread = (f"{upto(lower) / total:.1%} <= {lower * 1000:g} ms < {(upto(upper) - upto(lower)) / total:.1%} "
              f"<= {upper * 1000:g} ms < {(total - upto(upper)) / total:.1%}") if total else "no observations"
    slow = total - upto(lower)
    in_bucket = (upto(upper) - upto(lower)) / slow if slow else 0
    check("p99 latency", lower < p99 <= upper_p99 and lower < p99_all <= upper_p99 and in_bucket >= 0.95,
          f"histogram_quantile(0.99, sum by (le) (rate(..._bucket[1m]))) = {p99 * 1000:.1f} ms "
          f"(counters: {p99_all * 1000:.1f} ms), expected in ({lower * 1000:g}, {upper_p99 * 1000:g}] ms for sleep:{int(sleep * 1000)}, "
          f"with >= 95% of the calls over {lower * 1000:g} ms within {upper * 1000:g} ms ({in_bucket:.1%}); "
          f"observations: {spread}")
    check("histogram from both instances", len(contributing) == 2,
          f"{len(contributing)} instances with UnaryEcho observations: {sorted(r['metric']['instance'] for r in contributing)}")

    # (d) the recording rules and the error-ratio alert.
    rec_rate = scalar(f'grpc:server_requests:rate5m{{{sel},grpc_method="UnaryEcho"}}')
    rec_ratio = scalar(f'grpc:server_errors:ratio_rate5m{{{sel},grpc_method="UnaryEcho"}}')
    rec_p99 = scalar(f'grpc:server_handling_seconds:p99_5m{{{sel},grpc_method="UnaryEcho"}}')
    # The codes grpc-rules.yml counts as server errors.
    server_codes = ("Unknown", "ResourceExhausted", "Internal", "Unavailable", "DataLoss", "DeadlineExceeded")
    expected_ratio = sum(n for c, n in codes.items() if c in server_codes) / sent
    check("recording rules",
          rec_rate > 0
          and abs(rec_ratio - expected_ratio) <= 0.02
          and lower < rec_p99 <= upper_p99,
          f"grpc:server_requests:rate5m = {rec_rate}, grpc:server_errors:ratio_rate5m = {rec_ratio} "
          f"(sent {expected_ratio:.4f}), grpc:server_handling_seconds:p99_5m = {rec_p99}")
    alerts = [a for a in get("/api/v1/alerts")["alerts"]
              if a["labels"].get("alertname") == "GrpcServerHighErrorRatio" and a["labels"].get("grpc_method") == "UnaryEcho"
              and a["labels"].get("job") == JOB]
    if expected_ratio > 0.05:
        check("alert", len(alerts) == 1 and alerts[0]["state"] in ("pending", "firing"),
              f"GrpcServerHighErrorRatio for UnaryEcho: {[a['state'] for a in alerts] or 'absent'} "
              f"(error ratio {expected_ratio:.0%} > 5%; 'for: 5m' keeps it pending)")
    else:
        check("alert", not alerts, f"GrpcServerHighErrorRatio for UnaryEcho: {[a['state'] for a in alerts] or 'absent'}")

    rps = [r.get("rps") for r in runs]
    print(f"figures: {sent} requests over 2 instances {by_instance}, codes {got_codes}, "
          f"error ratio {ratio:.4f}, p99 {p99 * 1000:.1f} ms (recorded {rec_p99 * 1000:.1f} ms), "
          f"increase() {increase:.1f}, loadgen rps {rps}")
    with open(os.path.join(os.environ["WORK"], "counts"), "w") as f:
        f.write(f"{len(passes)} {len(failures)}\n")
    if failures:
        print(f"e2e: failed: {', '.join(failures)}")
        sys.exit(1)
PY
}

py wait-up || { show_logs; exit 1; }
log "all three targets up"

run_loadgen() {
    local out="$1"
    shift
    timeout 60 "$bin/loadgen" --target "$grpc1" --target "$grpc2" --error-every "$error_every" \
        --error-code "$error_code" --sleep-ms "$sleep_ms" --json "$@" >"$out" 2>"$work/loadgen.log" ||
        { show_logs; die "loadgen failed"; }
    tail -n 1 "$out"
}

# A short first run creates every series the traffic touches (an error code's series is
# born with its first error), and a scrape records them before the main run: rate() then
# sees the main run whole, as it would in a long-running fleet.
log "priming: $((2 * error_every)) requests"
run_loadgen "$work/prime.json" --requests "$((2 * error_every))" --concurrency 4 >/dev/null
py wait-scraped "$(date +%s.%N)" || { show_logs; exit 1; }

log "traffic: $requests requests, $concurrency in flight, every ${error_every}th fail:$error_code, others sleep:$sleep_ms"
summary="$(run_loadgen "$work/main.json" --requests "$requests" --concurrency "$concurrency")"
log "loadgen: $summary"
py wait-scraped "$(date +%s.%N)" || { show_logs; exit 1; }

status=0
py check "$work/prime.json" "$work/main.json" || status=1
add_counts "$work/counts"

# The shipped dashboard's queries, run on this Prometheus with its variables set to both
# jobs: every panel, server and client, must show data.
if dashboard="$(python3 contrib/grafana/check-dashboard.py --prometheus "$prom" --var job="$job|$job-demo" \
    --var instance='.*' --var service='.*' --var method='.*' --require-data 'grpc_' \
    contrib/grafana/grpc-dashboard.json)"; then
    record PASS "dashboard queries" "${dashboard#ok   }"
else
    record FAIL "dashboard queries"
    echo "$dashboard"
fi

finish "$status"
