#!/usr/bin/env python3
"""Raw-socket HTTP client for the hostile-input specs (stdlib only).

Usage: raw_client.py CONFIG.json OUT.json
CONFIG: {"port": n, "timeout": s, "conns": [{"send": "<latin-1 bytes>", "shut": bool,
                                            "drip": "<latin-1 bytes>", "every": s}]}
Every connection runs in its own thread at once: it sends its bytes as one
write, half-closes (shutdown(SHUT_WR)) when "shut" is set, then reads until
the server closes or the timeout. OUT gets, per connection,
{"data": "<latin-1 bytes read>", "eof": bool} (eof: the server closed).
"drip" bytes are sent after "send", one every "every" seconds (a slow loris),
until they run out or the server closes; "dripped" reports how many went.
Lua cannot half-close a socket, hence this helper.
"""
import json
import os
import socket
import sys
import threading
import time


def run(port, conn, timeout, out, i):
    data, eof, dripped = b"", False, 0
    s = None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(conn["send"].encode("latin-1"))
        for b in conn.get("drip", "").encode("latin-1"):
            time.sleep(conn.get("every", 0.2))
            try:
                s.sendall(bytes([b]))
            except OSError:
                break
            dripped += 1
        if conn.get("shut"):
            s.shutdown(socket.SHUT_WR)
        while True:
            part = s.recv(65536)
            if not part:
                eof = True
                break
            data += part
    except OSError as e:  # timeout or reset: report what arrived
        out[i] = {"data": data.decode("latin-1"), "eof": eof, "dripped": dripped, "error": str(e)}
        return
    finally:
        if s is not None:
            s.close()
    out[i] = {"data": data.decode("latin-1"), "eof": eof, "dripped": dripped}


def main():
    cfg = json.load(open(sys.argv[1]))
    conns = cfg["conns"]
    out = [None] * len(conns)
    threads = [threading.Thread(target=run, args=(cfg["port"], c, cfg.get("timeout", 5), out, i))
               for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(sys.argv[2] + ".part", "w") as f:
        json.dump(out, f)
    os.rename(sys.argv[2] + ".part", sys.argv[2])


if __name__ == "__main__":
    main()
