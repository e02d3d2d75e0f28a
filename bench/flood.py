#!/usr/bin/env python3
"""Connection floods against a local engine, with a legitimate client beside them.

Usage: flood.py --port N [--idle 10000] [--loris 1000] [--seconds 20]
                [--path /v4/...] [--auth 'ZenApiKey ...'] [--drip 0.5]
Holds `idle` connections that never send a byte and `loris` connections that
send a request line and then one header byte every `drip` seconds (never
finishing), reopening any the server closes so the flood stays up, while a
legitimate client sends GET `path` on a fresh connection, one after another.
Loopback only; stops by itself after `seconds`. Prints one JSON object:
the connections held, how many the server closed, and the legitimate
client's answers and latency (ms: p50, p95, max).
"""
import argparse
import json
import resource
import selectors
import socket
import threading
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Flood:
    def __init__(self, port, idle, loris, drip):
        self.port, self.idle_target, self.loris_target, self.drip = port, idle, loris, drip
        self.sel = selectors.DefaultSelector()
        self.idle, self.loris = set(), {}
        self.closed_idle = self.closed_loris = self.connect_failures = 0
        self.held_idle = self.held_loris = 0
        self.min_held = None

    def open(self, kind):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            self.connect_failures += 1
            s.close()
            return False
        self.sel.register(s, selectors.EVENT_READ, kind)
        if kind == "idle":
            self.idle.add(s)
        else:
            self.loris[s] = 0  # bytes of the header sent so far
        return True

    def top_up(self, budget):
        while budget > 0 and len(self.idle) < self.idle_target:
            if not self.open("idle"):
                return
            budget -= 1
        while budget > 0 and len(self.loris) < self.loris_target:
            if not self.open("loris"):
                return
            budget -= 1

    def drop(self, s):
        kind = self.sel.get_key(s).data
        self.sel.unregister(s)
        s.close()
        if kind == "idle":
            self.idle.discard(s)
            self.closed_idle += 1
        else:
            self.loris.pop(s, None)
            self.closed_loris += 1

    def drip_once(self):
        head = b"POST /v4/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nX-Slow: "
        for s, n in list(self.loris.items()):
            try:
                if n == 0:
                    s.send(head)
                    self.loris[s] = len(head)
                else:
                    s.send(b"z")
                    self.loris[s] = n + 1
            except BlockingIOError:
                pass
            except OSError:
                self.drop(s)

    def run(self, seconds, ready):
        deadline = time.monotonic() + seconds
        next_drip = 0
        while time.monotonic() < deadline:
            self.top_up(2000)
            if not ready.is_set() and len(self.idle) >= self.idle_target and len(self.loris) >= self.loris_target:
                ready.set()
            for key, _ in self.sel.select(timeout=0.05):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.drop(s)
            now = time.monotonic()
            if now >= next_drip:
                self.drip_once()
                next_drip = now + self.drip
            if ready.is_set():
                held = len(self.idle) + len(self.loris)
                self.min_held = held if self.min_held is None else min(self.min_held, held)
        self.held_idle, self.held_loris = len(self.idle), len(self.loris)
        ready.set()
        for s in list(self.idle) + list(self.loris):
            self.sel.unregister(s)
            s.close()


def legit(port, path, auth, stop, out):
    lat, ok, failed, errors = [], 0, 0, {}
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            req = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n" % path
            if auth:
                req += "Authorization: %s\r\n" % auth
            s.sendall((req + "\r\n").encode())
            data = b""
            while True:
                part = s.recv(65536)
                if not part:
                    break
                data += part
            s.close()
            if data.startswith(b"HTTP/1.1 200 "):
                ok += 1
                lat.append((time.monotonic() - t0) * 1000)
            else:
                failed += 1
                k = data[:12].decode(errors="replace") or "no answer"
                errors[k] = errors.get(k, 0) + 1
        except OSError as e:
            failed += 1
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
        time.sleep(0.05)
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(len(lat) * p))], 1) if lat else None
    out.update(requests=ok + failed, answered=ok, failed=failed, errors=errors,
               p50_ms=pct(0.5), p95_ms=pct(0.95), max_ms=round(lat[-1], 1) if lat else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--loris", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--drip", type=float, default=0.5)
    ap.add_argument("--path", default="/")
    ap.add_argument("--auth", default="")
    a = ap.parse_args()
    raise_nofile()
    flood = Flood(a.port, a.idle, a.loris, a.drip)
    ready, stop, out = threading.Event(), threading.Event(), {}
    t0 = time.monotonic()
    ft = threading.Thread(target=flood.run, args=(a.seconds, ready))
    ft.start()
    ready.wait()
    ramp = time.monotonic() - t0
    lt = threading.Thread(target=legit, args=(a.port, a.path, a.auth, stop, out))
    lt.start()
    ft.join()
    stop.set()
    lt.join()
    print(json.dumps({
        "idle_target": a.idle, "loris_target": a.loris, "ramp_s": round(ramp, 1),
        "held_at_end": flood.held_idle + flood.held_loris, "min_held_under_load": flood.min_held,
        "closed_by_server": {"idle": flood.closed_idle, "loris": flood.closed_loris},
        "connect_failures": flood.connect_failures, "legit": out,
    }))


if __name__ == "__main__":
    main()
