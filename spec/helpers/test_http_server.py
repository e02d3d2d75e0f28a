#!/usr/bin/env python3
"""Tiny HTTP/1.1 server for the HTTP client specs (stdlib only).

Binds 127.0.0.1 on an ephemeral port and prints, flushed, one line each:
    PORT <port>      the port it serves on
    PID <pid>        its process id (the spec kills it with SIGTERM)
    CLOSED <port>    a port that was free a moment ago (nothing listens there)
It also exits by itself when its parent process goes away, so a crashed spec
run never leaves it behind. Start it with `exec` so the parent is the spec.

Routes (any method):
    /echo            JSON {method, path, headers (lower-cased), body, body_hex}
    /raw             the request body, verbatim
    /status/<n>      status n
    /slow/<seconds>  sleep, then 200
    /big/<bytes>     a body of that size (?chunked=1: chunked, no Content-Length)
    /gzip            a gzip-encoded body (Content-Encoding: gzip)
    /headers         repeated X-Multi headers and a mixed-case name
    /conn            the client's port: the same on one keep-alive connection
    /drop/<key>      read the request, count it under key, close without an answer
    /count/<key>     how many requests /drop/<key> has read
"""
import gzip
import json
import os
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from parent_watch import exit_with_parent

GZIP_PLAIN = b"hello gzip " * 100
DROPPED = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, body=b"", headers=(), chunked=False):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 16384):
                part = body[i:i + 16384]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self):
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = parse_qs(url.query)
        body = self._read_body()
        route = parts[0]
        arg = parts[1] if len(parts) > 1 else None
        if route == "echo":
            payload = {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("latin-1"),
                "body_hex": body.hex(),
            }
            self._send(200, json.dumps(payload).encode(), [("Content-Type", "application/json")])
        elif route == "raw":
            self._send(200, body, [("Content-Type", "application/octet-stream")])
        elif route == "status" and arg:
            self._send(int(arg), b"status " + arg.encode())
        elif route == "slow" and arg:
            time.sleep(float(arg))
            self._send(200, b"slept")
        elif route == "big" and arg:
            n = int(arg)
            self._send(200, (b"0123456789abcdef" * (n // 16 + 1))[:n], chunked="chunked" in query)
        elif route == "gzip":
            self._send(200, gzip.compress(GZIP_PLAIN),
                       [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")])
        elif route == "headers":
            self._send(200, b"ok", [("X-Multi", "a"), ("X-Multi", "b"), ("X-Mixed-Case", "Yes")])
        elif route == "conn":
            self._send(200, str(self.client_address[1]).encode())
        elif route == "drop" and arg:
            DROPPED[arg] = DROPPED.get(arg, 0) + 1
            self.close_connection = True  # no answer at all: the client sees the connection close
        elif route == "count" and arg:
            self._send(200, str(DROPPED.get(arg, 0)).encode())
        else:
            self._send(404, b"not found")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _route


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that time out or cancel leave broken pipes behind


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    server = Server(("127.0.0.1", 0), Handler)
    exit_with_parent()
    sys.stdout.write("PORT %d\nPID %d\nCLOSED %d\n" % (server.server_address[1], os.getpid(), free_port()))
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
