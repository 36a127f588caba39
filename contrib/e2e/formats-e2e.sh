#!/usr/bin/env bash
# End to end for the exposition formats against a real Prometheus: one example server
# with --native-histograms (exemplars are always on in it), scraped every second by three
# Debian `prometheus` servers that each ask for a different format, traffic from the
# loadgen example with a W3C traceparent on every call, then the HTTP APIs' answers
# checked against what the load generator says it sent:
#
#   A  default flags + --enable-feature=exemplar-storage: asks for OpenMetrics (2.42 asks
#      for it by default), gets the classic buckets with exemplars;
#   B  --enable-feature=native-histograms,exemplar-storage: asks for protobuf, gets the
#      native histograms (with the classic buckets and their exemplars alongside);
#   C  default flags, scraping /metrics?format=text (`params: {format: [text]}`): the text
#      format, whatever its Accept header says.
#
# Checks:
#   - the Accept headers each Prometheus really sends (a tiny capture server is a second
#     target of each) are Prometheus 2.42's, and /metrics answers each of them (curl, with
#     the captured Accept and Accept-Encoding) with the right Content-Type, gzip, and a body
#     that parses; `promtool check metrics` accepts the text scrape;
#   - every target up with no lastError, `up`/`scrape_samples_scraped` sane, and no scrape
#     failure counted by any Prometheus (prometheus_target_scrapes_* and friends zero);
#   - requests: sum(grpc_server_handled_total) equals what was sent, on all three;
#   - B: histogram_quantile(0.5, sum(rate(grpc_server_handling_seconds{...}[1m]))) over the
#     native series lies in the schema-3 bucket that holds the median of the server's own
#     native buckets (for sleep:100, (0.0964, 0.1051] on a quiet machine), which agrees with
#     the client's latencies; B stored the native series only (2.42 drops the classic
#     _bucket/_count/_sum series of a histogram that is native);
#   - A and C: the classic histogram_quantile(0.5, ..._bucket) lands in (0.1, 0.25];
#   - exemplars: after the 100 ms calls, a few 300 ms calls put exemplars in a second
#     bucket. A's /api/v1/query_exemplars returns only trace ids the client sent, each on
#     the bucket its value falls in, with a value between its call's sleep and its latency
#     seen by the client, and the exemplar the server holds now for each bucket. B: Prometheus
#     2.42 keeps one exemplar per native histogram per scrape, on the native series (no
#     `le`): the one of the lowest classic bucket that has one. So B has the 100 ms calls'
#     exemplars (same checks, its newest the server's lowest bucket's) and none of the
#     300 ms calls', which the 0.25 bucket's exemplar shadows.
#
#   contrib/e2e/formats-e2e.sh
#
# Environment (all optional):
#   E2E_PROFILE       debug (default) or release
#   E2E_REQUESTS      UnaryEcho calls (default 200), each with its own trace id
#   E2E_CONCURRENCY   calls in flight (default 5: 200 calls of 100 ms take 4 s, so several
#                     scrapes see the traffic and A keeps several exemplars)
#   E2E_SLOW_REQUESTS calls of sleep:300 after those, for exemplars in a second bucket
#                     (default 10)
#   PROMETHEUS        the server binary (default: `prometheus` on PATH; installed from
#                     Debian when missing and running as root)
#   PROMTOOL          default: `promtool` on PATH (Debian's prometheus package has it)
#   CARGO_TARGET_DIR  respected, like cargo does.
# Needs cargo, python3 (standard library only) and curl. After the build it takes about
# 15 s; every wait is bounded. All it starts is stopped, and its temporary directory
# removed, on exit, whatever happens. Prints PASS/FAIL per check and exits non-zero if any
# check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

profile="${E2E_PROFILE:-debug}"
requests="${E2E_REQUESTS:-200}"
concurrency="${E2E_CONCURRENCY:-5}"
sleep_ms=100 # the calls whose quantiles are checked: in the classic (0.1, 0.25] bucket
slow_requests="${E2E_SLOW_REQUESTS:-10}"
slow_ms=300
job="tonic-metrics-formats"

. contrib/e2e/lib.sh formats-e2e
check_profile E2E_PROFILE
require_tools cargo python3 curl
find_prometheus
promtool="${PROMTOOL:-$(command -v promtool || true)}"
[ -n "$promtool" ] || die "promtool not found (it comes with Debian's prometheus; or set PROMTOOL)"
prom_version="$(prometheus_version)"
start_work tonic-metrics-formats

# The python checks append "PASS name" or "FAIL name" here, one line each.
results="$work/results"
: >"$results"

# --- Build (the default target dir unless CARGO_TARGET_DIR says otherwise).
build_examples server loadgen

# --- The server. Port 0 for both listeners: no race between picking a port and binding it.
RUST_LOG=warn start_process server "$bin/server" --host 127.0.0.1 --port 0 --metrics-port 0 --native-histograms
line="$(wait_for_line "$work/server.out" '^gRPC listening on ' server)"
# "gRPC listening on 127.0.0.1:P; metrics on http://127.0.0.1:M/metrics"
grpc="$(sed -E 's/^gRPC listening on ([^;]+);.*/\1/' <<<"$line")"
metrics="$(sed -nE 's|.*metrics on http://([^/]+)/metrics.*|\1|p' <<<"$line")"
[ -n "$metrics" ] || die "the server has no metrics listener: '$line'"
log "server: gRPC $grpc, metrics $metrics (native histograms, exemplars)"

# --- A capture server, a second target of each Prometheus (path /A, /B, /C): it keeps the
# headers of each scrape, so the Accept headers checked below are the ones really sent.
cat >"$work/capture.py" <<'PY'
import http.server, json, os, sys
work = sys.argv[1]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path, _, query = self.path.partition("?")
        name = path.strip("/")
        if name in ("A", "B", "C"):
            with open(os.path.join(work, f"accept-{name}.json.tmp"), "w") as f:
                json.dump({"accept": self.headers.get("Accept"), "accept_encoding": self.headers.get("Accept-Encoding"),
                           "user_agent": self.headers.get("User-Agent"), "query": query}, f)
            os.replace(os.path.join(work, f"accept-{name}.json.tmp"), os.path.join(work, f"accept-{name}.json"))
        body = b"# TYPE formats_e2e_capture gauge\nformats_e2e_capture 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"capturing on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
PY
start_process capture python3 "$work/capture.py" "$work"
capture="$(wait_for_line "$work/capture.out" '^capturing on ' 'the capture server' | sed 's/^capturing on //')"

# --- Three Prometheus servers, each scraping the server (and the capture server) every second.
write_config() { # write_config NAME PARAMS_YAML
    local name="$1" params="$2"
    cat >"$work/prometheus-$name.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: $job
    static_configs:
      - targets: ['$metrics']
$params
  - job_name: capture
    metrics_path: /$name
    static_configs:
      - targets: ['$capture']
$params
EOF
}
write_config A ""
write_config B ""
write_config C "    params:
      format: [text]"

launch_prometheus prometheus-A --enable-feature=exemplar-storage
launch_prometheus prometheus-B --enable-feature=native-histograms,exemplar-storage
launch_prometheus prometheus-C
for name in A B C; do await_prometheus "prometheus-$name"; done
log "prometheus $prom_version: A ${prom_url[prometheus-A]} (exemplar-storage), B ${prom_url[prometheus-B]} (native-histograms,exemplar-storage), C ${prom_url[prometheus-C]} (format=text)"

# Queries, waits and checks: python3 with the standard library only.
export PROM_A="${prom_url[prometheus-A]}" PROM_B="${prom_url[prometheus-B]}" PROM_C="${prom_url[prometheus-C]}"
export JOB="$job" METRICS="$metrics"
export WORK="$work" RESULTS="$results" SLEEP_MS="$sleep_ms" SLOW_MS="$slow_ms" PROM_VERSION="$prom_version"
py() { python3 - "$@" <<'PY'
import gzip, json, math, os, re, sys, time, urllib.request
from prom_api import api, active_targets, wait

PROMS = {name: os.environ[f"PROM_{name}"] for name in "ABC"}
JOB, WORK, METRICS = os.environ["JOB"], os.environ["WORK"], os.environ["METRICS"]
SLEEP = int(os.environ["SLEEP_MS"]) / 1000
SLOW = int(os.environ["SLOW_MS"]) / 1000
METHOD = 'grpc_method="UnaryEcho"'

def get(prom, path, **params):
    return api(PROMS[prom], path, **params)

def query(prom, expr):
    return get(prom, "/api/v1/query", query=expr)["result"]

def scalar(prom, expr):  # NaN for no result: every comparison with it fails
    result = query(prom, expr)
    return float(result[0]["value"][1]) if result else float("nan")

def targets(prom):
    return active_targets(PROMS[prom])

def check(name, ok, detail):
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    with open(os.environ["RESULTS"], "a") as f:
        f.write(f"{'PASS' if ok else 'FAIL'} {name}\n")
    return ok

def scrape(query="", accept=None):
    """The server's /metrics, uncompressed."""
    request = urllib.request.Request(f"http://{METRICS}/metrics{query}", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()

# --- Protobuf: just enough of the wire format for delimited MetricFamily messages.
def varint(data, pos):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos

def zigzag(n):
    return (n >> 1) ^ -(n & 1)

def fields(data):
    """(field number, wire type, value) of one message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        yield number, wire, value

def delimited(data):
    pos = 0
    while pos < len(data):
        length, pos = varint(data, pos)
        if pos + length > len(data):
            raise ValueError("truncated message")
        yield data[pos:pos + length]
        pos += length

def native_histograms(data, family):
    """{labels: (schema, zero_count, {bucket index: count})} of one family's native histograms."""
    out = {}
    for message in delimited(data):
        f = list(fields(message))
        if not any(n == 1 and v.decode() == family for n, _, v in f):
            continue
        for n, _, metric in f:
            if n != 4:
                continue
            labels, histogram = {}, None
            for m, _, v in fields(metric):
                if m == 1:
                    pair = {k: val.decode() for k, _, val in fields(v)}
                    labels[pair.get(1, "")] = pair.get(2, "")
                elif m == 7:
                    histogram = v
            if histogram is None:
                continue
            schema, zero, spans, deltas = None, 0, [], []
            for h, wire, v in fields(histogram):
                if h == 5:
                    schema = zigzag(v)
                elif h == 7:
                    zero = v
                elif h == 12:
                    span = dict((k, val) for k, _, val in fields(v))
                    spans.append((zigzag(span.get(1, 0)), span.get(2, 0)))
                elif h == 13:
                    if wire == 2:
                        pos = 0
                        while pos < len(v):
                            d, pos = varint(v, pos)
                            deltas.append(zigzag(d))
                    else:
                        deltas.append(zigzag(v))
            buckets, index, count, i = {}, 0, 0, 0
            for offset, length in spans:
                index += offset
                for _ in range(length):
                    count += deltas[i]
                    i += 1
                    buckets[index] = count
                    index += 1
            out[tuple(sorted(labels.items()))] = (schema, zero, buckets)
    return out

def native_bucket(value, schema):
    """The index k of the native bucket (2^((k-1)/2^s), 2^(k/2^s)] holding value."""
    scale = 2 ** schema
    k = math.ceil(math.log2(value) * scale)
    while value > 2 ** (k / scale):
        k += 1
    while value <= 2 ** ((k - 1) / scale):
        k -= 1
    return k

def bounds_of(k, schema):
    scale = 2 ** schema
    return 2 ** ((k - 1) / scale), 2 ** (k / scale)

# --- OpenMetrics exemplars of the server's UnaryEcho buckets: {le: (trace_id, value, ts)}.
EXEMPLAR = re.compile(r'^grpc_server_handling_seconds_bucket\{(.*)\} \S+ # \{trace_id="([0-9a-f]{32})"\} (\S+)(?: (\S+))?$')
def om_exemplars(text):
    out = {}
    for line in text.splitlines():
        m = EXEMPLAR.match(line)
        if m and METHOD in m.group(1):
            le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
            out[le] = (m.group(2), float(m.group(3)), float(m.group(4)) if m.group(4) else None)
    return out

def sent_calls():
    """{trace id: (client latency, code, requested sleep)} of both runs."""
    calls = {}
    for name, sleep in (("traces.txt", SLEEP), ("traces-slow.txt", SLOW)):
        path = os.path.join(WORK, name)
        if not os.path.exists(path):
            continue
        for line in open(path):
            trace_id, seconds, code, _target = line.split()
            calls[trace_id] = (float(seconds), code, sleep)
    return calls

command = sys.argv[1]
if command == "wait-up":
    def up():
        for prom in PROMS:
            ts_ = targets(prom)
            if len(ts_) != 2 or not all(t["health"] == "up" and not t["lastError"] for t in ts_):
                return False
        return all(os.path.exists(os.path.join(WORK, f"accept-{p}.json")) for p in PROMS)
    wait("both targets of all three Prometheus servers up", up, 25)

elif command == "accept":
    # What each Prometheus asked for, and what 2.42's source says it asks for
    # (scrape/scrape.go: scrapeAcceptHeader, scrapeAcceptHeaderWithProtobuf).
    source = {
        "A": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "B": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    }
    source["C"] = source["A"]
    seen = {p: json.load(open(os.path.join(WORK, f"accept-{p}.json"))) for p in PROMS}
    for p, s in seen.items():
        print(f"      {p} sent Accept: {s['accept']}  Accept-Encoding: {s['accept_encoding']}  query: {s['query'] or '-'}  ({s['user_agent']})")
        with open(os.path.join(WORK, f"accept-{p}"), "w") as f:
            f.write(f"{s['accept']}\n{s['accept_encoding']}\n")
    if os.environ["PROM_VERSION"].startswith("2.42."):
        check("accept headers", all(seen[p]["accept"] == source[p] and seen[p]["accept_encoding"] == "gzip" for p in PROMS)
              and seen["C"]["query"] == "format=text",
              "A, B and C sent Prometheus 2.42's headers (B with protobuf first), Accept-Encoding: gzip, C with ?format=text")
    else:
        print(f"      (Prometheus {os.environ['PROM_VERSION']}: the headers above are checked below, not against 2.42's)")

elif command == "content-types":
    # Each response got with curl and the headers that Prometheus sent (files: accept-P,
    # P.headers, P.body); C's with ?format=text.
    expect = {
        "A": ("application/openmetrics-text; version=1.0.0; charset=utf-8", "OpenMetrics"),
        "B": ("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited", "protobuf"),
        "C": ("text/plain; version=0.0.4; charset=utf-8", "text"),
    }
    for p, (ctype, fmt) in expect.items():
        head = open(os.path.join(WORK, f"{p}.headers"), encoding="latin-1").read()
        headers = {}
        for line in head.splitlines()[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        status = head.splitlines()[0] if head else ""
        raw = open(os.path.join(WORK, f"{p}.body"), "rb").read()
        gz = headers.get("content-encoding") == "gzip"
        problem = None
        try:
            body = gzip.decompress(raw) if gz else raw
            if fmt == "OpenMetrics":
                text = body.decode()
                ok_body = text.endswith("# EOF\n") and "# TYPE grpc_server_handling_seconds histogram" in text
                what = f"{len(text.splitlines())} lines ending '# EOF'"
            elif fmt == "protobuf":
                names = []
                for message in delimited(body):
                    names += [v.decode() for n, _, v in fields(message) if n == 1]
                natives = native_histograms(body, "grpc_server_handling_seconds")
                ok_body = "grpc_server_handling_seconds" in names and len(natives) > 0 and all(
                    h[0] == 3 for h in natives.values())
                what = f"{len(names)} delimited MetricFamily messages, {len(natives)} native histograms (schema {sorted({h[0] for h in natives.values()})})"
            else:
                text = body.decode()
                ok_body = "# TYPE grpc_server_handling_seconds histogram" in text and "# EOF" not in text
                what = f"{len(text.splitlines())} lines"
        except Exception as error:  # noqa: BLE001 - any decoding error is the finding
            ok_body, what = False, f"undecodable: {error!r}; first bytes {raw[:64]!r}"
        got = headers.get("content-type")
        check(f"content type {p}", " 200 " in status + " " and got == ctype and gz and ok_body,
              f"Accept of {p} -> {status.strip()}, Content-Type: {got}, Content-Encoding: {headers.get('content-encoding')}, "
              f"{len(raw)} bytes gzip -> {what} (expected {fmt}: {ctype}, gzip)")

elif command == "settle":
    # Blocks until the server has handled every call sent (the layer records a call as its
    # response ends, which may be a moment after the client has it).
    sent = int(sys.argv[2])
    def handled():
        total = observed = 0
        for line in scrape("?format=text").decode().splitlines():
            if line.startswith("grpc_server_handled_total{"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("grpc_server_handling_seconds_count{") and METHOD in line:
                observed += float(line.rsplit(" ", 1)[1])
        return total == sent and observed == sent
    wait(f"the server counting {sent} calls handled", handled, 10)
    time.sleep(0.1)  # the exemplar is stored a moment after the counts

elif command == "wait-scraped":
    # A scrape of the server that began after the given time, committed, on all three: `up`'s
    # sample carries the scrape's start time, and is appended with the scrape's samples.
    since = float(sys.argv[2])
    def scraped():
        for prom in PROMS:
            if not scalar(prom, f'timestamp(up{{job="{JOB}"}})') > since:
                return False
        return True
    wait("a scrape after the traffic on all three", scraped, 10)

elif command == "check":
    calls = sent_calls()
    sent = len(calls)
    client = sorted(seconds for seconds, _, _ in calls.values())
    client_median = client[len(client) // 2]
    sel = f'job="{JOB}",{METHOD}'

    # (1) Targets, up, scrape_samples_scraped, and no scrape failure counted anywhere.
    samples = {}
    for prom in PROMS:
        ts_ = targets(prom)
        server_targets = [t for t in ts_ if t["labels"].get("job") == JOB]
        up = scalar(prom, f'up{{job="{JOB}"}}')
        samples[prom] = scalar(prom, f'scrape_samples_scraped{{job="{JOB}"}}')
        check(f"target {prom}", len(server_targets) == 1 and all(t["health"] == "up" and not t["lastError"] for t in ts_)
              and up == 1 and samples[prom] > 0,
              f"{[(t['scrapeUrl'], t['health'], t['lastError']) for t in server_targets]}, up = {up:g}, "
              f"scrape_samples_scraped = {samples[prom]:g}")
    # Protobuf (B) sends each histogram as one native sample (its classic buckets ignored);
    # OpenMetrics (A) and text (C) send the same classic samples.
    check("scrape_samples_scraped", samples["A"] == samples["C"] and samples["B"] < samples["A"],
          f"A (OpenMetrics) {samples['A']:g}, C (text) {samples['C']:g}, B (protobuf, native) {samples['B']:g}")
    failure = re.compile(r"^(prometheus_target_scrapes_\w+|prometheus_target_scrape_pool_exceeded_\w+|"
                         r"prometheus_target_scrape_pools_failed_total|prometheus_target_scrape_pool_reloads_failed_total|"
                         r"prometheus_tsdb_exemplar_out_of_order_exemplars_total|prometheus_target_sync_failed_total)(\{[^}]*\})? (\S+)$")
    for prom in PROMS:
        with urllib.request.urlopen(PROMS[prom] + "/metrics", timeout=5) as response:
            own = response.read().decode()
        counters = {}
        for line in own.splitlines():
            m = failure.match(line)
            if m:
                counters[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        nonzero = {k: v for k, v in counters.items() if v != 0}
        check(f"no scrape errors {prom}", len(counters) >= 8 and not nonzero,
              f"{len(counters)} failure counters, nonzero: {nonzero or 'none'}")

    # (2) Requests: exact, from the counters, on all three.
    for prom in PROMS:
        handled = scalar(prom, f'sum(grpc_server_handled_total{{job="{JOB}"}})')
        started = scalar(prom, f'sum(grpc_server_started_total{{job="{JOB}"}})')
        check(f"requests {prom}", handled == sent and started == sent,
              f"sum(grpc_server_handled_total) = {handled:g}, sum(grpc_server_started_total) = {started:g}, loadgen sent {sent}")

    # (3) B: the native histogram, and only it.
    natives = native_histograms(scrape("", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"),
                                "grpc_server_handling_seconds")
    native = [h for labels, h in natives.items() if ("grpc_method", "UnaryEcho") in labels]
    if len(native) != 1:
        check("native quantile B", False, f"the server's protobuf has {len(native)} UnaryEcho native histograms")
    else:
        schema, zero, buckets = native[0]
        total = zero + sum(buckets.values())
        running, median_k = zero, None
        for k in sorted(buckets):
            running += buckets[k]
            if median_k is None and running >= total / 2:
                median_k = k
        lo, hi = bounds_of(median_k, schema)
        q = scalar("B", f"histogram_quantile(0.5, sum(rate(grpc_server_handling_seconds{{{sel}}}[1m])))")
        k_sleep = native_bucket(SLEEP, schema)
        k_client = native_bucket(client_median, schema)
        relative = (2 ** (1 / 2 ** schema) - 1) / (2 ** (1 / 2 ** schema) + 1)
        spread = ", ".join(f"({bounds_of(k, schema)[0]:.4f}, {bounds_of(k, schema)[1]:.4f}]: {n}"
                           for k, n in sorted(buckets.items()))
        check("native quantile B", lo < q <= hi and k_sleep <= median_k <= k_client,
              f"histogram_quantile(0.5, sum(rate(grpc_server_handling_seconds{{...}}[1m]))) = {q:.5f} s, in the server's "
              f"median bucket ({lo:.5f}, {hi:.5f}] (schema {schema}, relative error {relative:.1%}; "
              f"{SLEEP:g} s is in ({bounds_of(k_sleep, schema)[0]:.5f}, {bounds_of(k_sleep, schema)[1]:.5f}]; the client's median "
              f"latency {client_median:.5f} s); server's native buckets: {spread}")
        count = scalar("B", f"sum(histogram_count(grpc_server_handling_seconds{{{sel}}}))")
        native_series = query("B", f"grpc_server_handling_seconds{{{sel}}}")
        classic_b = {name: len(query("B", f'{{__name__="grpc_server_handling_seconds_{name}",job="{JOB}"}}'))
                     for name in ("bucket", "count", "sum")}
        check("native only B", count == sent and len(native_series) == 1 and "histogram" in native_series[0]
              and not any(classic_b.values()),
              f"histogram_count = {count:g} (sent {sent}), native series {len(native_series)}; classic series stored: "
              f"_bucket {classic_b['bucket']}, _count {classic_b['count']}, _sum {classic_b['sum']} (2.42 keeps the native "
              f"histogram only when the protobuf has both)")

    # (4) A and C: the classic buckets.
    bounds = sorted(float(r["metric"]["le"]) for r in query("A", f"group by (le) (grpc_server_handling_seconds_bucket{{{sel}}})"))
    upper = next((b for b in bounds if b > SLEEP), float("nan"))
    lower = max([0] + [b for b in bounds if b <= SLEEP])
    for prom in "AC":
        q = scalar(prom, f"histogram_quantile(0.5, sum by (le) (rate(grpc_server_handling_seconds_bucket{{{sel}}}[1m])))")
        native_there = len(query(prom, f"grpc_server_handling_seconds{{{sel}}}"))
        check(f"classic quantile {prom}", lower < q <= upper and native_there == 0,
              f"histogram_quantile(0.5, sum by (le) (rate(..._bucket[1m]))) = {q:.4f} s, expected in ({lower:g}, {upper:g}]; "
              f"native series: {native_there}")

    # (5) Exemplars. What the server holds now, per bucket (the latest of each).
    held = om_exemplars(scrape("?format=openmetrics").decode())
    print(f"      the server's exemplars now: {held}")
    start, end = float(sys.argv[2]), float(sys.argv[3])

    def exemplars(prom, selector):
        data = get(prom, "/api/v1/query_exemplars", query=selector, start=f"{start - 60:.3f}", end=f"{time.time() + 1:.3f}")
        return [(s["seriesLabels"], e) for s in data for e in s["exemplars"]]

    def verify(prom, found, on_native):
        problems = []
        for series, e in found:
            trace_id = e["labels"].get("trace_id")
            value, at = float(e["value"]), float(e["timestamp"])
            if trace_id not in calls:
                problems.append(f"trace id {trace_id} never sent")
                continue
            latency, _, sleep = calls[trace_id]
            if not (sleep <= value <= latency + 1e-6):
                problems.append(f"{trace_id}: value {value} outside [its sleep {sleep}, the client's {latency}]")
            if not (start - 1 <= at <= end + 1):
                problems.append(f"{trace_id}: timestamp {at} outside the traffic [{start:.3f}, {end:.3f}]")
            if series.get("grpc_method") != "UnaryEcho":
                problems.append(f"{trace_id}: on {series}")
            if on_native:
                if "le" in series or series.get("__name__") != "grpc_server_handling_seconds":
                    problems.append(f"{trace_id}: on {series}, not the native series")
            else:
                le = float(series.get("le", "nan"))
                below = max([0] + [b for b in bounds if b < le])
                if not (below < value <= le):
                    problems.append(f"{trace_id}: value {value} not in its series' bucket ({below:g}, {le:g}]")
        return problems

    # A: one stream of exemplars per bucket series.
    found_a = exemplars("A", f"grpc_server_handling_seconds_bucket{{{sel}}}")
    problems = verify("A", found_a, on_native=False)
    latest = {}
    for series, e in found_a:
        le = series.get("le")
        if le not in latest or float(e["timestamp"]) > float(latest[le]["timestamp"]):
            latest[le] = e
    for le, (trace_id, value, _) in held.items():
        e = latest.get(le) or latest.get(str(float(le)) if le != "+Inf" else le)
        if not e or e["labels"].get("trace_id") != trace_id or abs(float(e["value"]) - value) > 1e-9:
            problems.append(f"the server's exemplar of le={le} ({trace_id} {value}) is not A's latest there ({e})")
    if len(held) < (2 if any(sleep == SLOW for _, _, sleep in calls.values()) else 1):
        problems.append(f"the server holds exemplars in buckets {sorted(held)} only")
    ids_a = sorted({e["labels"]["trace_id"] for _, e in found_a})
    check("exemplars A", found_a and held and not problems,
          f"{len(found_a)} exemplars, {len(ids_a)} distinct trace ids of {sent} sent, on buckets "
          f"{sorted({s.get('le') for s, _ in found_a})}: "
          + ("all sent, each in its bucket and between its call's sleep and client latency, the server's latest per bucket included"
             if not problems else "; ".join(problems[:8])))
    for series, e in sorted(found_a, key=lambda se: float(se[1]["timestamp"])):
        print(f"      A le={series.get('le'):>5} {e['labels']['trace_id']} {float(e['value']):.6f} s "
              f"(client {calls.get(e['labels']['trace_id'], ('?',))[0]} s) at {float(e['timestamp']):.3f}")

    # B: Prometheus 2.42 reads the exemplars of a native histogram from its classic buckets,
    # but its scrape loop asks the parser for one exemplar per sample: the first classic
    # bucket's that has one, stored on the native series (no `le`). No `_bucket` series, so
    # none there. Once the 0.25 bucket holds one, the 300 ms calls' (0.5 bucket) never get in.
    found_b = exemplars("B", f"grpc_server_handling_seconds{{{sel}}}")
    on_buckets_b = exemplars("B", f"grpc_server_handling_seconds_bucket{{{sel}}}")
    problems_b = verify("B", found_b, on_native=True)
    if on_buckets_b:
        problems_b.append(f"{len(on_buckets_b)} exemplars on _bucket series")
    lowest = held[min(held, key=float)] if held else None
    newest = max(found_b, key=lambda se: float(se[1]["timestamp"]))[1] if found_b else None
    if lowest and (not newest or newest["labels"].get("trace_id") != lowest[0]):
        problems_b.append(f"B's newest exemplar {newest} is not the server's lowest bucket's ({lowest})")
    slow_b = [e["labels"]["trace_id"] for _, e in found_b if calls.get(e["labels"]["trace_id"], (0, 0, 0))[2] == SLOW]
    if slow_b:
        problems_b.append(f"exemplars of 300 ms calls on B: {slow_b} (2.42 should take the 0.25 bucket's only)")
    ids_b = sorted({e["labels"]["trace_id"] for _, e in found_b})
    check("exemplars B", found_b and not problems_b,
          f"{len(found_b)} exemplars on the native series, {len(ids_b)} distinct trace ids, 0 on _bucket series: "
          + ("all sent, each between its call's sleep and client latency, the newest the server's lowest bucket's, "
             "none of the 300 ms calls (shadowed by the 0.25 bucket's exemplar)"
             if not problems_b else "; ".join(problems_b[:8])))
    for series, e in sorted(found_b, key=lambda se: float(se[1]["timestamp"])):
        print(f"      B {e['labels']['trace_id']} {float(e['value']):.6f} s at {float(e['timestamp']):.3f}")
    print(f"figures: {sent} calls, client latency median {client_median:.4f} s (min {client[0]:.4f}, max {client[-1]:.4f}); "
          f"exemplars A {len(found_a)} ({len(ids_a)} ids), B {len(found_b)} ({len(ids_b)} ids)")
PY
}

py wait-up || { show_logs; exit 1; }
log "both targets up on A, B and C"

# --- Formats: what each Prometheus asks for, and what /metrics answers to that (before the
# traffic: the negotiation does not depend on it).
py accept
for name in A B C; do
    accept="$(sed -n 1p "$work/accept-$name")"
    encoding="$(sed -n 2p "$work/accept-$name")"
    query=""
    [ "$name" = C ] && query="?format=text"
    curl -sS --max-time 5 -D "$work/$name.headers" -o "$work/$name.body" \
        -H "Accept: $accept" -H "Accept-Encoding: $encoding" "http://$metrics/metrics$query" ||
        { show_logs; die "curl of /metrics$query failed"; }
done
py content-types
if lint="$(curl -sS --max-time 5 "http://$metrics/metrics?format=text" | "$promtool" check metrics 2>&1)"; then
    record PASS "promtool" "promtool check metrics accepts the text format scrape${lint:+ ($lint)}"
else
    record FAIL "promtool" "promtool check metrics: $lint"
fi

# --- Traffic: every call with its own trace id, logged with its latency by the client. In
# the background and waited for, so that a signal stops it too.
run_loadgen() { # run_loadgen NAME REQUESTS SLEEP_MS
    local name="$1" pid
    timeout 60 "$bin/loadgen" --target "$grpc" --requests "$2" --concurrency "$concurrency" --sleep-ms "$3" \
        --traceparent unique --trace-log "$work/traces$name.txt" --json \
        >"$work/loadgen$name.out" 2>>"$work/loadgen.log" &
    pid="$!"
    pids+=("$pid")
    wait "$pid" || { show_logs; die "loadgen failed"; }
}
log "traffic: $requests UnaryEcho calls of sleep:$sleep_ms, $concurrency in flight, a traceparent on each"
traffic_start="$(date +%s.%N)"
run_loadgen "" "$requests" "$sleep_ms"
log "loadgen: $(tail -n 1 "$work/loadgen.out")"
if [ "$slow_requests" -gt 0 ]; then
    log "then $slow_requests calls of sleep:$slow_ms (exemplars in the next bucket)"
    run_loadgen -slow "$slow_requests" "$slow_ms"
fi
py settle "$((requests + slow_requests))" || { show_logs; exit 1; }
traffic_end="$(date +%s.%N)"
py wait-scraped "$traffic_end" || { show_logs; exit 1; }
log "a scrape after the traffic on A, B and C"

py check "$traffic_start" "$traffic_end" || record FAIL "checks" "the checks stopped: see above"

add_counts "$results"
finish
