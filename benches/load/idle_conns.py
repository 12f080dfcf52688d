#!/usr/bin/env python3
"""Workload 4 of the load harness: open N keep-alive connections to HOST:PORT, make one
GET on each (read the whole response), then hold them all idle until SIGTERM/SIGINT or
until --hold seconds have passed.

Connects at most --batch at a time so no listen backlog overflows. When every
connection has its answer, writes "ready OK FAILED" (one line) to --ready-file, so the
caller can measure the server while the connections sit idle.

Usage: idle_conns.py HOST PORT PATH [-n 10000] [--batch 256] [--ready-file F] [--hold S]
"""

import argparse
import errno
import selectors
import signal
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("path")
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--ready-file")
    ap.add_argument("--hold", type=float, default=120.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()

    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "User-Agent: fleetgate-load-idle\r\n\r\n"
    ).encode()
    sel = selectors.DefaultSelector()
    held = []  # connections that got their answer, kept open
    failed = 0
    started = 0
    inflight = 0
    deadline = time.monotonic() + args.timeout

    def start_one():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((args.host, args.port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            return False
        sel.register(s, selectors.EVENT_WRITE, {"buf": b"", "sent": False})
        return True

    while (started < args.n or inflight > 0) and time.monotonic() < deadline:
        while started < args.n and inflight < args.batch:
            started += 1
            if start_one():
                inflight += 1
            else:
                failed += 1
        for key, mask in sel.select(timeout=1.0):
            s, st = key.fileobj, key.data
            try:
                if not st["sent"]:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, "connect")
                    s.sendall(request)
                    st["sent"] = True
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                chunk = s.recv(65536)
                if not chunk:
                    raise OSError("closed before the answer")
                st["buf"] += chunk
                head, sep, body = st["buf"].partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if len(body) < length:
                    continue
                sel.unregister(s)
                inflight -= 1
                if head.startswith(b"HTTP/1.1 200"):
                    held.append(s)
                else:
                    failed += 1
                    s.close()
            except OSError:
                sel.unregister(s)
                s.close()
                inflight -= 1
                failed += 1
    failed += inflight  # timed out
    line = f"ready {len(held)} {failed}\n"
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write(line)
        import os

        os.replace(args.ready_file + ".tmp", args.ready_file)
    else:
        sys.stdout.write(line)
        sys.stdout.flush()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    end = time.monotonic() + args.hold
    while not stop and time.monotonic() < end:
        time.sleep(0.1)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
