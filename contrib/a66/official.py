#!/usr/bin/env python3
"""gRPC's official OpenTelemetry metrics (gRFC A66) as Prometheus renders them, for comparison.

An echo server and client for `grpc.examples.echo.Echo` (tonic-metrics'
`testing/proto/echo.proto`) with grpc-python's OpenTelemetry plugin (`grpc_observability`)
enabled, its MeterProvider read by OpenTelemetry's Prometheus exporter and served by
`prometheus_client`, plus a normalizer that turns any exposition into JSON and a differ,
so that `a66-e2e.sh` can compare the official output with tonic-metrics' `Naming::Grpc`.

Modes (combine --serve and --target to run both in one process):

  official.py --serve 0 --metrics-port 0                    server only, until SIGINT/SIGTERM
  official.py --target 127.0.0.1:50051 --metrics-port 0     client: the fixed traffic mix
  official.py --stubs                                       generate the stubs and exit
  official.py --json http://127.0.0.1:9464/metrics          scrape and print normalized JSON
  official.py --json saved.txt                              normalize a saved exposition
  official.py --diff expected.json actual.json              compare two normalized JSONs

Port 0 binds an ephemeral port; the server's stderr says which (`serving on HOST:PORT,
metrics on URL`), as does the client's (`metrics on URL`). The stubs are generated from the
proto with grpcio-tools into --gen-dir (default: $A66_GEN_DIR, else a temporary directory
removed at exit), never next to this file.

The --json and --diff modes, and this module's functions, need only the standard library
(no grpc, no venv).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "testing", "proto", "echo.proto"))

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# gRFC A66 "default view" buckets (what grpc-go and grpc-java pass as bucket advice).
# Floats on purpose: the OTel exporter renders `le` as Python's str() of the bound, so
# floats give "0.0", "1e-05", "1.0", "1024.0" like the SDK's default bounds do (ints would
# give "0", "1", "1024").
A66_LATENCY_BUCKETS = [float(b) for b in (
    0, 0.00001, 0.00005, 0.0001, 0.0003, 0.0006, 0.0008, 0.001, 0.002, 0.003, 0.004,
    0.005, 0.006, 0.008, 0.01, 0.013, 0.016, 0.02, 0.025, 0.03, 0.04, 0.05, 0.065,
    0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5, 0.65, 0.8, 1, 2, 5, 10, 20, 50, 100,
)]
A66_SIZE_BUCKETS = [float(b) for b in (
    0, 1024, 2048, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
    268435456, 1073741824, 4294967296,
)]

# ---------------------------------------------------------------------------------------
# Exposition parsing and normalization (standard library only)
# ---------------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+(\S+))?\s*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_SUFFIXES = {
    "counter": ["_total", "_created", ""],
    "histogram": ["_bucket", "_count", "_sum", "_created"],
    "summary": ["_count", "_sum", "_created", ""],
    "info": ["_info", ""],
    "gauge": [""],
    "untyped": [""],
    "unknown": [""],
    "stateset": [""],
    "gaugehistogram": ["_bucket", "_gcount", "_gsum"],
}


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            n = value[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(n, "\\" + n))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_labels(text: str) -> dict:
    labels, body, pos = {}, text[1:-1], 0
    while pos < len(body):
        m = _LABEL_RE.match(body, pos)
        if not m:
            raise ValueError(f"bad label set: {text}")
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


def _number(text: str) -> float:
    return float({"+Inf": "inf", "-Inf": "-inf", "NaN": "nan"}.get(text, text))


def parse_exposition(text: str) -> dict:
    """Parses Prometheus text 0.0.4 or OpenMetrics 1.0 into {family: {type, help, unit, samples}}.

    Family names are kept exactly as the TYPE line spells them (so `_total` is part of a
    counter's name in the Prometheus text format and absent in OpenMetrics)."""
    families: dict = {}
    order: list = []

    def family(name: str) -> dict:
        if name not in families:
            families[name] = {"type": "untyped", "help": None, "unit": None, "samples": []}
            order.append(name)
        return families[name]

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE", "UNIT"):
                fam = family(parts[2])
                rest = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    fam["help"] = _unescape(rest)
                elif parts[1] == "TYPE":
                    fam["type"] = rest.strip()
                else:
                    fam["unit"] = rest.strip()
            continue
        # Drop an OpenMetrics exemplar (" # {...} value").
        if " # " in line:
            line = line.split(" # ", 1)[0]
        m = _SAMPLE_RE.match(line)
        if not m:
            raise ValueError(f"unparseable sample line: {raw!r}")
        name, labels, value = m.group(1), m.group(2), m.group(3)
        owner = None
        for fam_name in sorted(families, key=len, reverse=True):
            suffixes = _SUFFIXES.get(families[fam_name]["type"], [""])
            if any(name == fam_name + s for s in suffixes):
                owner = fam_name
                break
        if owner is None:
            owner = name
            family(name)
        families[owner]["samples"].append(
            {"name": name, "labels": _parse_labels(labels) if labels else {}, "value": _number(value)}
        )
    return {name: families[name] for name in order}


def _num(v: float):
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return int(v) if v == int(v) and abs(v) < 2**53 else v


def normalize(text: str, prefixes=("grpc_",), timing: str = "keep", set_labels=None, drop_labels=()) -> dict:
    """{family: {type, help, unit, labels, series}} for the families whose name starts with
    one of `prefixes` (all when empty). Histograms become {labels, count, sum, buckets:
    [[le, cumulative count], ...]} with `le` verbatim as rendered; counters and gauges
    {labels, value}. `timing="count-only"` drops sum and bucket counts (keeping the `le`
    bounds) of `*_seconds` histograms, whose values vary run to run. `_created` samples
    are ignored. `set_labels` {name: value} overwrites a label where present (say
    grpc_target, whose port differs run to run); `drop_labels` removes labels."""
    set_labels = set_labels or {}
    parsed = parse_exposition(text)
    out: dict = {}
    for name, fam in parsed.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        ftype = fam["type"]
        label_names: set = set()
        series: dict = {}
        for s in fam["samples"]:
            if s["name"].endswith("_created"):
                continue
            labels = dict(s["labels"])
            le = labels.pop("le", None) if ftype in ("histogram", "gaugehistogram") else None
            for k in drop_labels:
                labels.pop(k, None)
            for k, v in set_labels.items():
                if k in labels:
                    labels[k] = v
            key = json.dumps(labels, sort_keys=True)
            label_names.update(labels)
            entry = series.setdefault(key, {"labels": dict(sorted(labels.items()))})
            if ftype in ("histogram", "gaugehistogram"):
                if s["name"].endswith("_bucket"):
                    entry.setdefault("buckets", []).append([le, _num(s["value"])])
                elif s["name"].endswith(("_count", "_gcount")):
                    entry["count"] = _num(s["value"])
                elif s["name"].endswith(("_sum", "_gsum")):
                    entry["sum"] = _num(s["value"])
            else:
                entry["value"] = _num(s["value"])
        if timing == "count-only" and ftype == "histogram" and "_seconds" in name:
            for entry in series.values():
                entry.pop("sum", None)
                if "buckets" in entry:
                    entry["le"] = [b[0] for b in entry.pop("buckets")]
        out[name] = {
            "type": ftype,
            "help": fam["help"],
            "unit": fam["unit"],
            "labels": sorted(label_names),
            "series": [series[k] for k in sorted(series)],
        }
    return out


def fetch(url: str, openmetrics: bool = False, timeout: float = 10.0) -> str:
    req = urllib.request.Request(url)
    if openmetrics:
        req.add_header("Accept", OPENMETRICS_ACCEPT)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read().decode("utf-8")


def load_exposition(source: str, openmetrics: bool = False) -> str:
    if source == "-":
        return sys.stdin.read()
    if source.startswith(("http://", "https://")):
        return fetch(source, openmetrics)
    with open(source, encoding="utf-8") as f:
        return f.read()


def _numeric_le(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k != "labels"}
    if "buckets" in out:
        out["buckets"] = [[_number(le), n] for le, n in out["buckets"]]
    if "le" in out:
        out["le"] = [_number(le) for le in out["le"]]
    return out


def diff(expected: dict, actual: dict, ignore_values: bool = False, strict_le: bool = False) -> list:
    """Differences between two normalized JSONs, as readable lines (empty when equal).

    `le` bounds compare as numbers ("1" == "1.0"), unless `strict_le`."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            problems.append(f"missing family {name}")
            continue
        if name not in expected:
            problems.append(f"unexpected family {name}")
            continue
        e, a = expected[name], actual[name]
        for field in ("type", "help", "unit", "labels"):
            if e.get(field) != a.get(field):
                problems.append(f"{name}: {field} {e.get(field)!r} != {a.get(field)!r}")
        es = {json.dumps(s["labels"], sort_keys=True): s for s in e["series"]}
        as_ = {json.dumps(s["labels"], sort_keys=True): s for s in a["series"]}
        for key in sorted(set(es) | set(as_)):
            if key not in as_:
                problems.append(f"{name}: missing series {key}")
            elif key not in es:
                problems.append(f"{name}: unexpected series {key}")
            elif not ignore_values:
                if strict_le:
                    se = {k: v for k, v in es[key].items() if k != "labels"}
                    sa = {k: v for k, v in as_[key].items() if k != "labels"}
                else:
                    se, sa = _numeric_le(es[key]), _numeric_le(as_[key])
                if se != sa:
                    problems.append(f"{name} {key}: {se} != {sa}")
    return problems


# ---------------------------------------------------------------------------------------
# The official gRPC side (needs the venv)
# ---------------------------------------------------------------------------------------


def ensure_stubs(proto: str, gen_dir: str | None) -> None:
    """Generates echo_pb2*.py into `gen_dir` with grpcio-tools when missing or stale (into a
    temporary directory removed at exit when `gen_dir` is None)."""
    if gen_dir is None:
        import atexit
        import shutil
        import tempfile

        gen_dir = tempfile.mkdtemp(prefix="a66-stubs.")
        atexit.register(shutil.rmtree, gen_dir, True)
    target = os.path.join(gen_dir, "echo_pb2_grpc.py")
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(proto):
        from grpc_tools import protoc

        os.makedirs(gen_dir, exist_ok=True)
        rc = protoc.main([
            "protoc", f"-I{os.path.dirname(os.path.abspath(proto))}",
            f"--python_out={gen_dir}", f"--grpc_python_out={gen_dir}",
            os.path.abspath(proto),
        ])
        if rc != 0:
            raise SystemExit(f"protoc failed on {proto}")
    if gen_dir not in sys.path:
        sys.path.insert(0, gen_dir)


def setup_observability(metrics_port: int | None, buckets: str, metrics_host: str):
    """Global grpc OpenTelemetry plugin -> MeterProvider -> PrometheusMetricReader -> HTTP.
    Returns (plugin, provider, the port /metrics is served on or None)."""
    import grpc_observability
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
    from prometheus_client import start_http_server

    reader = PrometheusMetricReader()
    views = []
    if buckets == "a66":
        views = [
            View(instrument_name="grpc.*.duration",
                 aggregation=ExplicitBucketHistogramAggregation(A66_LATENCY_BUCKETS)),
            View(instrument_name="grpc.*_compressed_message_size",
                 aggregation=ExplicitBucketHistogramAggregation(A66_SIZE_BUCKETS)),
        ]
    provider = MeterProvider(metric_readers=[reader], views=views)
    bound = None
    if metrics_port is not None:
        httpd, _ = start_http_server(metrics_port, addr=metrics_host)
        bound = httpd.server_port
    plugin = grpc_observability.OpenTelemetryPlugin(meter_provider=provider)
    plugin.register_global()
    return plugin, provider, bound


def go_code_table():
    import grpc

    names = {
        "OK": grpc.StatusCode.OK, "Canceled": grpc.StatusCode.CANCELLED,
        "Unknown": grpc.StatusCode.UNKNOWN, "InvalidArgument": grpc.StatusCode.INVALID_ARGUMENT,
        "DeadlineExceeded": grpc.StatusCode.DEADLINE_EXCEEDED, "NotFound": grpc.StatusCode.NOT_FOUND,
        "AlreadyExists": grpc.StatusCode.ALREADY_EXISTS,
        "PermissionDenied": grpc.StatusCode.PERMISSION_DENIED,
        "ResourceExhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "FailedPrecondition": grpc.StatusCode.FAILED_PRECONDITION, "Aborted": grpc.StatusCode.ABORTED,
        "OutOfRange": grpc.StatusCode.OUT_OF_RANGE, "Unimplemented": grpc.StatusCode.UNIMPLEMENTED,
        "Internal": grpc.StatusCode.INTERNAL, "Unavailable": grpc.StatusCode.UNAVAILABLE,
        "DataLoss": grpc.StatusCode.DATA_LOSS, "Unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    }
    by_number = {c.value[0]: c for c in grpc.StatusCode}
    return names, by_number


def parse_command(message: str):
    """('echo',) | ('sleep', seconds) | ('fail', grpc.StatusCode, go_name) — as testing/src/lib.rs."""
    if message.startswith("sleep:"):
        try:
            return ("sleep", int(message[6:].strip()) / 1000.0)
        except ValueError:
            return ("echo",)
    if message.startswith("fail:"):
        text = message[5:].strip()
        names, by_number = go_code_table()
        if text.lstrip("-").isdigit():
            n = int(text)
            return ("fail", by_number[n], text) if 0 <= n <= 16 else ("echo",)
        if text in names:
            return ("fail", names[text], text)
    return ("echo",)


def make_server(port: int, host: str):
    from concurrent import futures

    import grpc
    import echo_pb2
    import echo_pb2_grpc

    def fail(context, cmd):
        context.abort(cmd[1], f"requested by the client: {cmd[2]}")

    class Echo(echo_pb2_grpc.EchoServicer):
        def UnaryEcho(self, request, context):
            cmd = parse_command(request.message)
            if cmd[0] == "fail":
                fail(context, cmd)
            if cmd[0] == "sleep":
                time.sleep(cmd[1])
            return echo_pb2.EchoResponse(message=request.message)

        def ServerStreamingEcho(self, request, context):
            cmd = parse_command(request.message)
            for _ in range(5):
                if cmd[0] == "sleep":
                    time.sleep(cmd[1])
                yield echo_pb2.EchoResponse(message=request.message)
                if cmd[0] == "fail":
                    fail(context, cmd)

        def ClientStreamingEcho(self, request_iterator, context):
            received, failure = [], None
            for request in request_iterator:
                cmd = parse_command(request.message)
                if cmd[0] == "fail" and failure is None:
                    failure = cmd
                received.append(request.message)
            if failure:
                fail(context, failure)
            return echo_pb2.EchoResponse(message=",".join(received))

        def BidirectionalStreamingEcho(self, request_iterator, context):
            for request in request_iterator:
                cmd = parse_command(request.message)
                if cmd[0] == "fail":
                    fail(context, cmd)
                if cmd[0] == "sleep":
                    time.sleep(cmd[1])
                yield echo_pb2.EchoResponse(message=request.message)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    echo_pb2_grpc.add_EchoServicer_to_server(Echo(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot bind {host}:{port}")
    server.start()
    return server, bound


# The fixed traffic mix; a Rust client must send exactly this to be comparable.
#   (kind, method, messages, timeout seconds or None, expected client status)
TRAFFIC_MIX = (
    [("unary", "UnaryEcho", ["hello"], None, "OK")] * 3
    + [("unary", "UnaryEcho", ["fail:NotFound"], None, "NOT_FOUND")] * 2
    + [("unary", "UnaryEcho", ["fail:DeadlineExceeded"], None, "DEADLINE_EXCEEDED")]
    + [("generic", "/grpc.examples.echo.Echo/NoSuchMethod", ["hello"], None, "UNIMPLEMENTED")]
    + [("generic", "/no.such.Service/Method", ["hello"], None, "UNIMPLEMENTED")]
    + [("server_stream", "ServerStreamingEcho", ["hi"], None, "OK")] * 2
    + [("client_stream", "ClientStreamingEcho", ["hello", "hello", "hello"], None, "OK")]
    + [("bidi", "BidirectionalStreamingEcho", ["hello", "hello"], None, "OK")]
    + [("unary", "UnaryEcho", ["sleep:200"], 0.05, "DEADLINE_EXCEEDED")]
)


def run_traffic(target: str) -> list:
    import grpc
    import echo_pb2
    import echo_pb2_grpc

    results = []
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = echo_pb2_grpc.EchoStub(channel)
        for kind, method, messages, timeout, expected in TRAFFIC_MIX:
            reqs = [echo_pb2.EchoRequest(message=m) for m in messages]
            code, details, responses = "OK", "", 0
            try:
                if kind == "unary":
                    getattr(stub, method)(reqs[0], timeout=timeout)
                    responses = 1
                elif kind == "generic":
                    # Raw bytes: no serializers, not registered with the channel.
                    call = channel.unary_unary(method)
                    call(reqs[0].SerializeToString(), timeout=timeout)
                    responses = 1
                elif kind == "server_stream":
                    responses = sum(1 for _ in getattr(stub, method)(reqs[0], timeout=timeout))
                elif kind == "client_stream":
                    getattr(stub, method)(iter(reqs), timeout=timeout)
                    responses = 1
                elif kind == "bidi":
                    responses = sum(1 for _ in getattr(stub, method)(iter(reqs), timeout=timeout))
            except grpc.RpcError as err:
                code, details = err.code().name, err.details() or ""
            results.append({"kind": kind, "method": method, "messages": messages,
                            "timeout": timeout, "code": code, "status_message": details,
                            "expected": expected, "responses": responses})
    return results


def wait_recorded(metrics_url: str, family: str, calls: int, seconds: float) -> bool:
    """Waits until the histogram `family` at `metrics_url` has counted `calls` observations
    (grpc-python hands its stats to OpenTelemetry in batches, every 0.5 s by default)."""
    deadline = time.time() + seconds
    while True:
        series = normalize(fetch(metrics_url)).get(family, {"series": []})["series"]
        seen = sum(s.get("count", 0) for s in series)
        if seen >= calls:
            return True
        if time.time() > deadline:
            print(f"warning: {metrics_url} counts {seen} of {calls} calls in {family} after {seconds} s",
                  file=sys.stderr, flush=True)
            return False
        time.sleep(0.1)


def dump(metrics_url: str, directory: str, name: str) -> None:
    os.makedirs(directory, exist_ok=True)
    text = fetch(metrics_url)
    om = fetch(metrics_url, openmetrics=True)
    for suffix, body in ((".txt", text), (".openmetrics.txt", om)):
        with open(os.path.join(directory, name + suffix), "w", encoding="utf-8") as f:
            f.write(body)
    for suffix, timing in ((".json", "keep"), (".stable.json", "count-only")):
        with open(os.path.join(directory, name + suffix), "w", encoding="utf-8") as f:
            json.dump(normalize(text, timing=timing), f, indent=1, sort_keys=True)
            f.write("\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", type=int, metavar="PORT", help="run the echo server on PORT (0: ephemeral)")
    ap.add_argument("--host", default="127.0.0.1", help="server bind address (default 127.0.0.1)")
    ap.add_argument("--target", help="run the traffic mix against this channel target")
    ap.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: ephemeral)")
    ap.add_argument("--metrics-host", default="127.0.0.1")
    ap.add_argument("--buckets", choices=["sdk-default", "a66"], default="sdk-default",
                    help="histogram buckets: the OTel SDK's defaults (what grpc-python gives "
                         "out of the box) or gRFC A66's via SDK Views")
    ap.add_argument("--proto", default=DEFAULT_PROTO, help="echo.proto for the stubs (default: testing/proto/echo.proto)")
    ap.add_argument("--gen-dir", default=os.environ.get("A66_GEN_DIR"),
                    help="where the stubs are generated (default: $A66_GEN_DIR, else a temporary directory)")
    ap.add_argument("--stubs", action="store_true", help="generate the stubs into --gen-dir and exit")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="after the traffic, once the client's own /metrics counts every call (at most "
                         "10 s), wait this many more seconds for grpc's 0.5 s stats batches")
    ap.add_argument("--dump", metavar="DIR", help="client: scrape own metrics before and after "
                    "the traffic into DIR/<dump-name>-{before,after}{.txt,.openmetrics.txt,.json,.stable.json}")
    ap.add_argument("--dump-name", default="metrics")
    ap.add_argument("--linger", type=float, default=None,
                    help="after the traffic keep serving this many seconds, then exit "
                         "(default: exit at once with --target alone, run until a signal with --serve)")
    ap.add_argument("--json", metavar="SOURCE",
                    help="print normalized JSON of a URL, a file or - (stdin) and exit")
    ap.add_argument("--openmetrics", action="store_true",
                    help="with --json URL: ask for application/openmetrics-text")
    ap.add_argument("--prefix", action="append",
                    help="with --json: keep families starting with this (repeatable; default grpc_; '' keeps all)")
    ap.add_argument("--timing", choices=["keep", "count-only"], default="keep",
                    help="with --json: count-only drops sum and bucket counts of *_seconds histograms")
    ap.add_argument("--set-label", action="append", metavar="NAME=VALUE",
                    help="with --json: overwrite this label's value where present (repeatable), "
                         "e.g. grpc_target=TARGET")
    ap.add_argument("--drop-label", action="append", metavar="NAME",
                    help="with --json: remove this label (repeatable), e.g. otel_scope_version")
    ap.add_argument("--diff", nargs=2, metavar=("EXPECTED", "ACTUAL"),
                    help="compare two normalized JSON files; exit 1 when they differ")
    ap.add_argument("--ignore-values", action="store_true", help="with --diff: compare names, labels and series only")
    ap.add_argument("--strict-le", action="store_true", help="with --diff: compare `le` as strings, not numbers")
    args = ap.parse_args()

    if args.json:
        prefixes = tuple(p for p in (args.prefix or ["grpc_"]) if p)
        set_labels = dict(kv.split("=", 1) for kv in (args.set_label or []))
        out = normalize(load_exposition(args.json, args.openmetrics), prefixes, args.timing,
                        set_labels, tuple(args.drop_label or ()))
        json.dump(out, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    if args.diff:
        with open(args.diff[0], encoding="utf-8") as f:
            expected = json.load(f)
        with open(args.diff[1], encoding="utf-8") as f:
            actual = json.load(f)
        problems = diff(expected, actual, args.ignore_values, args.strict_le)
        for p in problems:
            print(p)
        print(f"{len(problems)} differences")
        return 1 if problems else 0
    if args.stubs:
        if not args.gen_dir:
            ap.error("--stubs needs --gen-dir (or $A66_GEN_DIR)")
        ensure_stubs(args.proto, args.gen_dir)
        return 0
    if args.serve is None and not args.target:
        ap.error("give --serve, --target, --stubs, --json or --diff")

    ensure_stubs(args.proto, args.gen_dir)
    plugin, provider, metrics_port = setup_observability(args.metrics_port, args.buckets, args.metrics_host)
    metrics_url = f"http://{args.metrics_host}:{metrics_port}/metrics" if metrics_port is not None else None

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    server = None
    if args.serve is not None:
        server, port = make_server(args.serve, args.host)
        print(f"serving on {args.host}:{port}" + (f", metrics on {metrics_url}" if metrics_url else ""),
              file=sys.stderr, flush=True)
    elif metrics_url:
        print(f"metrics on {metrics_url}", file=sys.stderr, flush=True)
    if args.target:
        if args.dump and metrics_url:
            dump(metrics_url, args.dump, args.dump_name + "-before")
        results = run_traffic(args.target)
        if metrics_url:
            wait_recorded(metrics_url, "grpc_client_attempt_duration_seconds", len(results), 10.0)
        time.sleep(args.settle)
        bad = [r for r in results if r["code"] != r["expected"]]
        print(json.dumps({"target": args.target, "calls": results, "unexpected": len(bad)}),
              file=sys.stderr, flush=True)
        if args.dump and metrics_url:
            dump(metrics_url, args.dump, args.dump_name + "-after")
        print("TRAFFIC DONE", file=sys.stderr, flush=True)
    if args.linger is not None:
        stop.wait(args.linger)
    elif server:
        stop.wait()
    if server:
        server.stop(grace=1).wait()
    plugin.deregister_global()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
