"""A counting HTTP/1.1 proxy on loopback, for the S3 benchmarks.

Sits between a client (xfull, restic) and an S3 server (SeaweedFS) and
forwards bytes verbatim (so SigV4 signatures, which cover the Host header,
stay valid: the client signs for the proxy's address and the server checks
what it receives). It parses the client's requests to count them by kind
and to add up the payload bytes the client sends; responses are piped
through and only their bytes are counted.

Per bucket (path-style: the first component of the path): requests by
kind, PUT payload bytes and response bytes, for runs where one client
talks to two buckets (a copy). A response's bytes go to the bucket of
the last request sent on its connection (clients do not pipeline).

Kinds: GET (object, ranged or not), PUT, HEAD, DELETE, LIST (GET on a
bucket or prefix with list-type, prefix, delimiter or no key), DELETE_MULTI
(POST ?delete), POST (other), GET_BUCKET_META (?location, ?versioning ...),
PUT_RETENTION (PutObjectRetention, ?retention).
"""

import socket
import threading
import time
import urllib.parse


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = {}
        self.by_dir = {}    # "KIND dir": requests by the key's first component under the repository prefix
        self.sent = 0       # request payload bytes (decoded length for aws-chunked)
        self.put_bytes = 0  # payload bytes of PUTs
        self.received = 0   # response bytes, headers included
        self.buckets = {}   # bucket: {"requests": {KIND: n}, "put_bytes": n, "received": n}
        self.trace = None   # a list to append (time, "KIND dir") to for every request, when tracing

    def bucket(self, name):
        """The counts of one bucket, made on first use; call with the lock held."""
        return self.buckets.setdefault(name, {"requests": {}, "put_bytes": 0, "received": 0})

    def snapshot(self):
        with self.lock:
            return {"requests": dict(self.kinds), "by_dir": dict(self.by_dir), "sent": self.sent, "put_bytes": self.put_bytes,
                    "received": self.received,
                    "buckets": {b: dict(c, requests=dict(c["requests"])) for b, c in self.buckets.items()}}

    @staticmethod
    def delta(a, b):
        req = {k: b["requests"].get(k, 0) - a["requests"].get(k, 0) for k in b["requests"]}
        bd = {k: b["by_dir"].get(k, 0) - a["by_dir"].get(k, 0) for k in b["by_dir"]}
        buckets = {}
        for n, c in sorted(b.get("buckets", {}).items()):
            was = a.get("buckets", {}).get(n, {"requests": {}, "put_bytes": 0, "received": 0})
            breq = {k: v - was["requests"].get(k, 0) for k, v in sorted(c["requests"].items())}
            if any(breq.values()):
                buckets[n] = {"requests": {k: v for k, v in breq.items() if v},
                              "put_bytes": c["put_bytes"] - was["put_bytes"],
                              "received": c["received"] - was["received"]}
        return {"requests": {k: v for k, v in sorted(req.items()) if v},
                "by_dir": {k: v for k, v in sorted(bd.items()) if v},
                "sent": b["sent"] - a["sent"], "put_bytes": b["put_bytes"] - a["put_bytes"],
                "received": b["received"] - a["received"], "buckets": buckets}


def classify(method, target):
    u = urllib.parse.urlsplit(target)
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    parts = [p for p in u.path.split("/") if p]
    if method == "POST":
        return "DELETE_MULTI" if "delete" in q else "POST"
    if method == "GET":
        if len(parts) <= 1 or "list-type" in q or "prefix" in q or "delimiter" in q:
            if any(k in q for k in ("location", "versioning", "policy", "acl", "lifecycle", "object-lock")):
                return "GET_BUCKET_META"
            return "LIST"
        return "GET"
    if method == "PUT" and "retention" in q:
        return "PUT_RETENTION"
    return method


class Proxy:
    def __init__(self, upstream_port, port=0, latency=0.0):
        self.up = ("127.0.0.1", upstream_port)
        # Seconds each request waits before it is forwarded: a round trip to a distant endpoint
        # (requests on different connections wait at the same time, as on a real network).
        self.latency = latency
        self.counts = Counts()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _pipe_back(self, s, c, cur):
        try:
            while True:
                d = s.recv(1 << 16)
                if not d:
                    break
                with self.counts.lock:
                    self.counts.received += len(d)
                    self.counts.bucket(cur[0])["received"] += len(d)
                c.sendall(d)
        except OSError:
            pass
        finally:
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _conn(self, c):
        try:
            s = socket.create_connection(self.up)
        except OSError:
            c.close()
            return
        # Forwarded as it comes, in pieces (a request head, then its body):
        # with Nagle's algorithm on, a small body waits for the ACK of the
        # head, which the receiver delays by 40 ms: every small PUT then
        # took about 45 ms longer through the proxy than without it.
        for sock in (c, s):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cur = ["-"]  # the bucket of the last request sent on this connection
        threading.Thread(target=self._pipe_back, args=(s, c, cur), daemon=True).start()
        buf = b""

        def fill():
            nonlocal buf
            d = c.recv(1 << 16)
            if not d:
                raise EOFError
            buf += d

        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    fill()
                head, buf = buf.split(b"\r\n\r\n", 1)
                started = time.monotonic()
                if self.latency:
                    time.sleep(self.latency)
                s.sendall(head + b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                h = {}
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    h[k.strip().lower()] = v.strip()
                kind = classify(method, target)
                parts = [p for p in urllib.parse.urlsplit(target).path.split("/") if p]
                cur[0] = parts[0] if parts else "-"
                body = 0
                if "chunked" in h.get("transfer-encoding", "").lower():
                    while True:
                        while b"\r\n" not in buf:
                            fill()
                        line, rest = buf.split(b"\r\n", 1)
                        n = int(line.split(b";")[0], 16)
                        need = len(line) + 2 + n + 2
                        if n == 0:
                            # trailers end with an empty line
                            while b"\r\n\r\n" not in buf:
                                fill()
                            end = buf.index(b"\r\n\r\n") + 4
                            s.sendall(buf[:end])
                            buf = buf[end:]
                            break
                        while len(buf) < need:
                            fill()
                        s.sendall(buf[:need])
                        buf = buf[need:]
                        body += n
                else:
                    n = int(h.get("content-length", "0") or 0)
                    body = n
                    while n > 0:
                        if not buf:
                            fill()
                        take = buf[:n]
                        s.sendall(take)
                        buf = buf[len(take):]
                        n -= len(take)
                if "x-amz-decoded-content-length" in h:
                    body = int(h["x-amz-decoded-content-length"])
                sub = f"{kind} {parts[2] if len(parts) > 3 else (parts[2] if len(parts) == 3 else '-')}"
                if kind == "LIST":
                    # A listing's directory is in its prefix: "repo/keys/" -> "LIST keys".
                    q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
                    pre = [p for p in q.get("prefix", [""])[0].split("/") if p]
                    sub = f"LIST {pre[1] if len(pre) > 1 else '-'}"
                with self.counts.lock:
                    if self.counts.trace is not None:
                        self.counts.trace.append((started, sub))
                    self.counts.by_dir[sub] = self.counts.by_dir.get(sub, 0) + 1
                    self.counts.kinds[kind] = self.counts.kinds.get(kind, 0) + 1
                    self.counts.sent += body
                    bc = self.counts.bucket(cur[0])
                    bc["requests"][kind] = bc["requests"].get(kind, 0) + 1
                    if kind == "PUT":
                        self.counts.put_bytes += body
                        bc["put_bytes"] += body
        except (EOFError, OSError, ValueError):
            pass
        finally:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
