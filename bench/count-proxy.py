#!/usr/bin/env python3
"""count-proxy.py LISTEN_PORT UPSTREAM_PORT LOG: an HTTP/1.1 proxy on 127.0.0.1
that forwards every request to 127.0.0.1:UPSTREAM_PORT unchanged and appends one
line per response to LOG: `STATUS BODY_BYTES METHOD TARGET`. Keep-alive, chunked
and Content-Length bodies are followed, so the log counts what each server really
sent, whoever the server is. Used by bench/fleet.sh; stops when killed."""
import socket
import sys
import threading

listen_port, upstream_port, log_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
log_lock = threading.Lock()


def read_head(sock, buf):
    """Reads up to the end of a message head; returns (head, rest) or None at EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def read_exact(sock, buf, n):
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("short body")
        buf += chunk
    return buf[:n], buf[n:]


def read_line(sock, buf):
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("short chunk")
        buf += chunk
    line, rest = buf.split(b"\r\n", 1)
    return line + b"\r\n", rest


def headers(head):
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            fields[name.strip().lower()] = value.strip()
    return fields


def read_body(sock, rest, fields, no_body):
    """Returns (raw bytes to forward, body length, rest)."""
    if no_body:
        return b"", 0, rest
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        raw, size = b"", 0
        while True:
            line, rest = read_line(sock, rest)
            raw += line
            n = int(line.split(b";")[0].strip(), 16)
            if n == 0:
                # Trailers, then the blank line.
                while True:
                    line, rest = read_line(sock, rest)
                    raw += line
                    if line == b"\r\n":
                        return raw, size, rest
            data, rest = read_exact(sock, rest, n + 2)
            raw += data
            size += n
    length = int(fields.get(b"content-length", b"0"))
    data, rest = read_exact(sock, rest, length)
    return data, length, rest


def serve(client):
    upstream = socket.create_connection(("127.0.0.1", upstream_port))
    from_client, from_upstream = b"", b""
    try:
        while True:
            got = read_head(client, from_client)
            if got is None:
                return
            head, from_client = got
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target = request_line.split(" ")[:2]
            fields = headers(head)
            body, _, from_client = read_body(client, from_client, fields, False)
            upstream.sendall(head + body)
            got = read_head(upstream, from_upstream)
            if got is None:
                return
            rhead, from_upstream = got
            status = int(rhead.split(b" ", 2)[1])
            no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
            raw, size, from_upstream = read_body(upstream, from_upstream, headers(rhead), no_body)
            client.sendall(rhead + raw)
            with log_lock, open(log_path, "a") as log:
                log.write(f"{status} {size} {method} {target}\n")
    except (ConnectionError, OSError, ValueError):
        return
    finally:
        client.close()
        upstream.close()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", listen_port))
listener.listen(64)
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
