"""Benchmark 1, the Python baseline: N keep-alive GETs of the same endpoint
with one requests.Session, what a user of the vendor's Python SDK pays per
call at the least (the SDK adds its own layers on top of requests).

    python3 bench/percall_requests.py URL AUTHORIZATION N  -> "seconds calls"
"""
import sys
import time

import requests


def main():
    url, authz, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = requests.Session()
    s.headers.update({"Accept": "application/json", "Authorization": authz})
    first = s.get(url, timeout=120)
    assert first.status_code == 200 and first.json()["spark_version"] == "3.3"
    t0 = time.monotonic()
    for i in range(1, n):
        r = s.get(url, timeout=120)
        if r.status_code != 200:
            raise SystemExit("call %d: status %d" % (i + 1, r.status_code))
        r.json()
    t1 = time.monotonic()
    print("%.6f %d" % (t1 - t0, n - 1))


if __name__ == "__main__":
    main()
