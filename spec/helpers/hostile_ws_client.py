#!/usr/bin/env python3
"""A hostile WebSocket client for the security specs (stdlib only, raw sockets).

    hostile_ws_client.py URL AUTHORIZATION ACTION...

Opens URL (ws://127.0.0.1:PORT/path?query) with the Authorization header,
prints the handshake's status line ("STATUS 101"), then does each ACTION:
    execute        send a Jupyter execute_request (masked text frame)
    text:DATA      send DATA as a text frame
    close-empty    send a close frame with no payload (legal: RFC 6455 5.5.1)
    close:CODE     send a close frame with CODE (even one that must not be sent)
    read:SECONDS   read frames for up to SECONDS, print "FRAME <opcode> <len>"
                   and "CLOSE <code>" for a close
    raw:HEX        send these bytes as they are (a partial frame, a bare header)
    drop           end the TCP connection at once (RST), without a close frame
    sleep:SECONDS  wait
Exits 0 after the last action (the socket is then closed abruptly).
"""
import base64
import json
import os
import socket
import struct
import sys
import time
import uuid
from urllib.parse import urlsplit


def frame(opcode, payload):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def execute_request():
    msg_id = uuid.uuid4().hex
    return json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "spec", "session": msg_id,
                   "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": "import time; time.sleep(0.5); 6*7", "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }).encode()


def read_frames(sock, seconds):
    sock.settimeout(0.2)
    buf = b""
    end = time.time() + seconds
    while time.time() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            print("EOF", flush=True)
            return
        if not chunk:
            print("EOF", flush=True)
            return
        buf += chunk
        while len(buf) >= 2:
            op, n = buf[0] & 0x0F, buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < off + n:
                break
            payload, buf = buf[off:off + n], buf[off + n:]
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
                print("CLOSE %d" % code, flush=True)
                return
            print("FRAME %d %d" % (op, n), flush=True)


def main():
    url, auth, actions = sys.argv[1], sys.argv[2], sys.argv[3:]
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    path = u.path + ("?" + u.query if u.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, u.hostname, u.port, key))
    if auth:
        req += "Authorization: %s\r\n" % auth
    sock.sendall((req + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    status = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 1 else "0"
    print("STATUS %s" % status, flush=True)
    if status != "101":
        return
    for a in actions:
        kind, _, arg = a.partition(":")
        if kind == "execute":
            sock.sendall(frame(1, execute_request()))
        elif kind == "text":
            sock.sendall(frame(1, arg.encode()))
        elif kind == "close-empty":
            sock.sendall(frame(8, b""))
        elif kind == "close":
            sock.sendall(frame(8, struct.pack("!H", int(arg))))
        elif kind == "raw":
            sock.sendall(bytes.fromhex(arg))
        elif kind == "read":
            read_frames(sock, float(arg))
        elif kind == "sleep":
            time.sleep(float(arg))
        elif kind == "drop":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


if __name__ == "__main__":
    main()
