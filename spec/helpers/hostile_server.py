#!/usr/bin/env python3
"""A hostile HTTP server for the bad-input specs (stdlib only, raw sockets).

Binds 127.0.0.1 on an ephemeral port, prints "PORT <n> PID <pid>" (flushed)
and serves until killed, or until its parent goes away. The answer depends on the first
segment of the path, so a client pointed at http://127.0.0.1:PORT/<mode> gets
that behaviour for every operation:
    /nonjson/...     200, Content-Type JSON, a body that is not JSON
    /truncated/...   200, a JSON body cut short (complete per HTTP)
    /cut/...         200, Content-Length promises more, then the connection closes
    /huge/...        200, a 100 MB JSON string body
    /slow/...        slow loris: the status line, then one header byte per 0.5 s
    /escape/...      500 whose message carries terminal escapes (title, colours, bell)
    /echo/...        401 whose message echoes the request's Authorization header
                     and the URL with its query (a server that leaks what it got)
    /switch/...      101 Switching Protocols to a plain GET, then silence
    /bighead/...     200 with 2 MB of header lines
    /bigline/...     200 with one header line of 1 MB
    /oddstate/...    a service whose applications stay in a state outside the
                     API's: POST accepts, every list/status says LIMBO, DELETE 204
    anything else    404 JSON
"""
import os
import socket
import sys
import threading
import time

from parent_watch import exit_with_parent

HUGE = 100 * 1024 * 1024


def answer(conn, path, head=""):
    def send(status, body, ctype="application/json", length=None):
        head = "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
            status, ctype, len(body) if length is None else length)
        conn.sendall(head.encode() + body)

    mode = path.split("/")[1] if path.count("/") >= 1 else ""
    if mode == "nonjson":
        send("200 OK", b"hello, this is not JSON")
    elif mode == "truncated":
        send("200 OK", b'{"applications": [{"id": "8')
    elif mode == "cut":
        send("200 OK", b'{"applications": [', length=4096)
    elif mode == "huge":
        conn.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n" % (HUGE + 2)).encode())
        conn.sendall(b'"')
        chunk = b"x" * 65536
        for _ in range(HUGE // len(chunk)):
            conn.sendall(chunk)
        conn.sendall(b'"')
    elif mode == "slow":
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for b in b"X-Slow: " + b"z" * 10000:
            conn.sendall(bytes([b]))
            time.sleep(0.5)
    elif mode == "escape":
        send("500 Internal Server Error",
             b'{"message": "boom \\u001b]0;pwned\\u0007\\u001b[31mred\\u001b[0m \\r\\nfake line"}')
    elif mode == "echo":
        authz = ""
        for line in head.split("\r\n"):
            if line.lower().startswith("authorization:"):
                authz = line.split(":", 1)[1].strip()
        body = ('{"message": "bad token %s for %s"}' % (authz, head.split("\r\n", 1)[0])).encode()
        send("401 Unauthorized", body)
    elif mode == "switch":
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        time.sleep(20)
    elif mode == "bighead":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
        for _ in range(2048):
            conn.sendall(line)
        conn.sendall(b"Content-Length: 2\r\n\r\n{}")
    elif mode == "bigline":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Big: " + b"b" * (1024 * 1024)
                     + b"\r\nContent-Length: 2\r\n\r\n{}")
    elif mode == "oddstate":
        app_id = "0b5c6f3e-1d2a-4c5b-8e9f-0a1b2c3d4e5f"
        method = head.split(" ", 1)[0]
        if method == "POST":
            send("202 Accepted", ('{"id": "%s", "application_id": "%s", "state": "ACCEPTED"}'
                                  % (app_id, app_id)).encode())
        elif method == "DELETE":
            send("204 No Content", b"")
        elif path.endswith("/spark_applications"):
            send("200 OK", ('{"applications": [{"id": "%s", "application_id": "%s", "state": "LIMBO"}]}'
                            % (app_id, app_id)).encode())
        else:
            send("200 OK", ('{"id": "%s", "application_id": "%s", "state": "LIMBO"}' % (app_id, app_id)).encode())
    else:
        send("404 Not Found", b'{"message": "no such thing"}')


def serve(conn):
    try:
        conn.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            part = conn.recv(4096)
            if not part:
                return
            data += part
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
        answer(conn, path, data.split(b"\r\n\r\n", 1)[0].decode("latin-1"))
    except OSError:
        pass  # the client gave up: that is what these answers are for
    finally:
        conn.close()


def main():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    sys.stdout.write("PORT %d PID %d\n" % (srv.getsockname()[1], os.getpid()))
    sys.stdout.flush()
    exit_with_parent(0.5)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
