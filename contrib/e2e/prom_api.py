"""What the end-to-end scripts' python checks share: the Prometheus HTTP API, its RFC 3339
timestamps, and waiting for a condition. Standard library only. lib.sh puts this
directory on PYTHONPATH and exports E2E_NAME, the script's name, for failure messages."""

import itertools
import json
import os
import time
import urllib.parse
import urllib.request
from datetime import datetime


def api(base, path, post=False, timeout=10, **params):
    """The `data` of a Prometheus API answer (GET, or POST for long queries); exits on any
    other status."""
    url = base + path
    data = urllib.parse.urlencode(params)
    if not post:
        url, data = url + ("?" + data if data else ""), None
    with urllib.request.urlopen(url, data=data and data.encode(), timeout=timeout) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise SystemExit(f"{url}: {body}")
    return body["data"]


def active_targets(base):
    return api(base, "/api/v1/targets", state="active")["activeTargets"]


def rfc3339(text):
    """Epoch seconds of an RFC 3339 time with up to nanoseconds (fromisoformat takes six
    fraction digits at most)."""
    text = text.replace("Z", "+00:00")
    head, _, tail = text.partition(".")
    if tail:
        digits = "".join(itertools.takewhile(str.isdigit, tail))
        text = f"{head}.{digits[:6]}{tail[len(digits):]}"
    return datetime.fromisoformat(text).timestamp()


def wait_up(targets, count, what, seconds=20):
    """Waits until targets() lists `count` targets, all up."""
    def up():
        found = targets()
        return len(found) == count and all(t["health"] == "up" for t in found)
    wait(what, up, seconds)


def wait_scraped(targets, since, seconds=10):
    """Waits until every target of targets() is up and was scraped after `since` (epoch
    seconds)."""
    wait("a scrape of every target after the traffic",
         lambda: all(t["health"] == "up" and rfc3339(t["lastScrape"]) > since for t in targets()), seconds)


def wait(what, condition, seconds):
    """condition()'s first truthy result, polled every 0.1 s; exits naming `what` after
    `seconds`."""
    deadline = time.time() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.time() > deadline:
            raise SystemExit(f"{os.environ.get('E2E_NAME', 'e2e')}: FAIL: {what} not within {seconds} s")
        time.sleep(0.1)
