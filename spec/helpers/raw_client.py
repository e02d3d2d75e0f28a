#!/usr/bin/env python3
"""Raw-socket HTTP client for the hostile-input specs (stdlib only).

Usage: raw_client.py CONFIG.json OUT.json
CONFIG: {"port": n, "timeout": s, "conns": [{"send": "<latin-1 bytes>", "shut": bool}]}
Every connection runs in its own thread at once: it sends its bytes as one
write, half-closes (shutdown(SHUT_WR)) when "shut" is set, then reads until
the server closes or the timeout. OUT gets, per connection,
{"data": "<latin-1 bytes read>", "eof": bool} (eof: the server closed).
Lua cannot half-close a socket, hence this helper.
"""
import json
import os
import socket
import sys
import threading


def run(port, conn, timeout, out, i):
    data, eof = b"", False
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(conn["send"].encode("latin-1"))
        if conn.get("shut"):
            s.shutdown(socket.SHUT_WR)
        while True:
            part = s.recv(65536)
            if not part:
                eof = True
                break
            data += part
    except OSError as e:  # timeout or reset: report what arrived
        out[i] = {"data": data.decode("latin-1"), "eof": eof, "error": str(e)}
        return
    finally:
        try:
            s.close()
        except Exception:
            pass
    out[i] = {"data": data.decode("latin-1"), "eof": eof}


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
