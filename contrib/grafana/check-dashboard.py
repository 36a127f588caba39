#!/usr/bin/env python3
"""Checks a Grafana dashboard JSON: valid JSON, sane structure, and every PromQL query parses.

    python3 contrib/grafana/check-dashboard.py [--var NAME=VALUE ...]
        [--prometheus URL --require-data REGEX] [DASHBOARD.json ...]

(default: contrib/grafana/grpc-dashboard.json next to this script). Every panel target's
`expr` and every query variable's selector (`label_values(<selector>, label)`,
`query_result(<query>)`) has its template variables replaced with concrete values
(`$__rate_interval` -> 1m, `$job` -> a job name, ...; `--var job=myjob` overrides), and
the lot is written into a temporary rules file, one recording rule per query, that
`promtool check rules` parses. promtool is `$PROMTOOL` if set, else `promtool` on PATH.

With `--prometheus URL`, every query is also run (an instant query) against that server,
and each one whose text matches `--require-data` must return at least one series: the
end-to-end script uses this to show the server panels have data from a real scrape.

Standard library only. Exits non-zero, listing every problem, if anything is wrong.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

# Grafana's built-in variables, replaced with values a real dashboard would get.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "30s",
    "__interval_ms": "30000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# Sample values for the dashboard's own variables (any other name gets "value").
SAMPLES = {
    "datasource": "prometheus",
    "job": "tonic-metrics",
    "instance": "127.0.0.1:50052",
    "service": "grpc.examples.echo.Echo",
    "method": "UnaryEcho",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)
LABEL_VALUES_BARE = re.compile(r"^\s*label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$")
QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.S)
METRICS = re.compile(r"^\s*metrics\(.*\)\s*$", re.S)


def no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"duplicate JSON keys: {', '.join(dupes)}")
    return dict(pairs)


def all_panels(panels):
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def substitute(expr, variables, problems, where):
    def replace(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in variables:
            return SAMPLES.get(name, "value")
        problems.append(f"{where}: unknown variable ${name}")
        return "value"

    return VARIABLE.sub(replace, expr)


def datasource_ok(ds):
    """A panel or target datasource must be the dashboard's datasource variable."""
    if isinstance(ds, dict):
        return ds.get("uid") in ("${datasource}", "$datasource")
    return ds in ("${datasource}", "$datasource")


def run_queries(prometheus, queries, require):
    """Runs each query on a live Prometheus; those matching `require` must return data."""
    problems, summary = [], []
    for _record, where, expr in queries:
        url = prometheus.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except Exception as error:  # HTTP 400 for a bad query, connection errors
            problems.append(f"{where}: {prometheus} could not run it: {error}")
            continue
        result = body.get("data", {}).get("result", [])
        summary.append(len(result))
        if require and re.search(require, expr) and not result:
            problems.append(f"{where}: no data from {prometheus}: {expr}")
    return problems, summary


def check(path, promtool, prometheus=None, require=None):
    problems = []
    try:
        with open(path, encoding="utf-8") as f:
            dashboard = json.load(f, object_pairs_hook=no_duplicate_keys)
    except (OSError, ValueError) as error:
        return [f"{path}: not valid JSON: {error}"], ""

    for key, kind in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list), ("templating", dict)):
        if not isinstance(dashboard.get(key), kind):
            problems.append(f"{path}: top-level '{key}' missing or not a {kind.__name__}")
    if problems:
        return problems, ""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"]):
        problems.append(f"{path}: uid {dashboard['uid']!r} is not 1-40 of [A-Za-z0-9_-]")
    if dashboard["schemaVersion"] < 36:
        problems.append(f"{path}: schemaVersion {dashboard['schemaVersion']} is older than Grafana 9")

    template_vars = dashboard["templating"].get("list", [])
    variables = {v.get("name"): v for v in template_vars}
    ds_vars = [v for v in template_vars if v.get("type") == "datasource"]
    if not any(v.get("name") == "datasource" and v.get("query") == "prometheus" for v in ds_vars):
        problems.append(f"{path}: no 'datasource' variable of type datasource for prometheus")
    for name in ("job", "instance"):
        if variables.get(name, {}).get("type") != "query":
            problems.append(f"{path}: no '{name}' query variable")

    queries = []  # (record name, where, expression)
    for var in template_vars:
        if var.get("type") != "query":
            continue
        where = f"variable ${var.get('name')}"
        if not datasource_ok(var.get("datasource")):
            problems.append(f"{where}: datasource is not ${{datasource}}")
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        if var.get("definition") not in (None, query):
            problems.append(f"{where}: 'definition' differs from the query")
        if LABEL_VALUES_BARE.match(query) or METRICS.match(query):
            continue
        match = LABEL_VALUES.match(query) or QUERY_RESULT.match(query)
        expr = match.group(1) if match else query
        queries.append((f"dashboard:variable_{var.get('name')}", where, substitute(expr, variables, problems, where)))

    ids = set()
    for panel in all_panels(dashboard["panels"]):
        pid = panel.get("id")
        where = f"panel {pid} {panel.get('title')!r}"
        if not isinstance(pid, int) or pid in ids:
            problems.append(f"{where}: id missing or not unique")
        ids.add(pid)
        if not panel.get("title"):
            problems.append(f"{where}: no title")
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) or grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: gridPos missing or wider than 24 columns: {grid}")
        if panel.get("type") == "row":
            continue
        if not datasource_ok(panel.get("datasource")):
            problems.append(f"{where}: datasource is not ${{datasource}}")
        targets = panel.get("targets", [])
        if not targets:
            problems.append(f"{where}: no queries")
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids):
            problems.append(f"{where}: duplicate refId")
        for target in targets:
            twhere = f"{where} query {target.get('refId')}"
            expr = target.get("expr", "")
            if not expr.strip():
                problems.append(f"{twhere}: empty expr")
                continue
            if "datasource" in target and not datasource_ok(target["datasource"]):
                problems.append(f"{twhere}: datasource is not ${{datasource}}")
            record = f"dashboard:panel_{pid}_{target.get('refId')}"
            queries.append((record, twhere, substitute(expr, variables, problems, twhere)))

    if not queries:
        problems.append(f"{path}: no queries found")
        return problems, ""

    # One recording rule per query: promtool parses each expression (and names the rule
    # that fails). JSON strings are valid YAML double-quoted scalars.
    with tempfile.TemporaryDirectory(prefix="dashboard-check-") as tmp:
        rules = os.path.join(tmp, "dashboard-queries.yml")
        with open(rules, "w", encoding="utf-8") as f:
            f.write("groups:\n  - name: dashboard-queries\n    rules:\n")
            for record, where, expr in queries:
                f.write(f"      # {where}\n")
                f.write(f"      - record: {record}\n        expr: {json.dumps(expr)}\n")
        result = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
        if result.returncode != 0:
            problems.append(f"{path}: promtool check rules failed on the dashboard's queries:\n"
                            + result.stdout + result.stderr)
            with open(rules, encoding="utf-8") as f:
                problems.append("the generated rules file was:\n" + f.read())
    if prometheus and not problems:
        live_problems, summary = run_queries(prometheus, queries, require)
        problems.extend(live_problems)
        with_data = sum(1 for n in summary if n)
        return problems, f"{len(queries)} queries parse (promtool check rules); on {prometheus}, " \
                         f"{with_data} of {len(summary)} return data, every one matching {require!r} among them"
    return problems, f"{len(queries)} queries parse (promtool check rules)"


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description="Check a Grafana dashboard's JSON and PromQL queries.")
    parser.add_argument("dashboards", nargs="*", default=[os.path.join(here, "grpc-dashboard.json")])
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="value substituted for $NAME (default: a sample value)")
    parser.add_argument("--prometheus", metavar="URL", help="also run every query on this Prometheus")
    parser.add_argument("--require-data", metavar="REGEX",
                        help="with --prometheus: queries matching REGEX must return data")
    args = parser.parse_args(argv[1:])
    for assignment in args.var:
        name, sep, value = assignment.partition("=")
        if not sep:
            parser.error(f"--var wants NAME=VALUE, not {assignment!r}")
        SAMPLES[name] = value
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        print("check-dashboard: promtool not found (set PROMTOOL or install Debian's prometheus)", file=sys.stderr)
        return 2
    failed = False
    for path in args.dashboards:
        problems, summary = check(path, promtool, args.prometheus, args.require_data)
        if problems:
            failed = True
            print(f"FAIL {path}")
            for problem in problems:
                print(f"  - {problem}")
        else:
            print(f"ok   {path}: valid JSON, {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
