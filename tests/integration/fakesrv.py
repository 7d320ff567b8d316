#!/usr/bin/env python3
"""fakesrv.py - a misbehaving server on loopback for test_errors.sh.

  fakesrv.py MODE ADDRESS_FILE

Listens on 127.0.0.1:0, writes http://127.0.0.1:PORT to ADDRESS_FILE, serves until killed.
MODE:
  junk        HTTP/1.1 200, content-type application/json, random bytes, to every request
  junk-rpc    as junk, but ListSandboxes answers {} (so a mount can start), and
              CreateSandbox answers a JSON object of the wrong shape
  raw         not HTTP at all: random bytes on every connection, then close
  hang        accepts, reads, never answers
  flaky       HTTP/1.1 proxy to $FAKESRV_UPSTREAM (the local backend): forwards every
              request, but answers the first CreateSandbox (after forwarding it: the
              sandbox IS created) and every other GetSandbox with 503 unavailable, as a
              lost answer would look; request bodies are appended to ADDRESS_FILE.bodies
  record      HTTP/1.1; ListSandboxes answers {}, everything else junk; the headers of
              every request are appended as one JSON object a line to ADDRESS_FILE.headers
"""
import http.client
import http.server
import json
import urllib.parse
import os
import socket
import socketserver
import sys
import threading
import time

mode, addr_file = sys.argv[1], sys.argv[2]


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    counts = {}
    lock = threading.Lock()

    def answer(self):
        if mode == "flaky":
            return self.proxy()
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        elif self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        if mode == "record":
            with open(addr_file + ".headers", "a") as f:
                h = {k.lower(): v for k, v in self.headers.items()}
                h[":path"] = self.path
                f.write(json.dumps(h) + "\n")
        if mode in ("junk-rpc", "record") and self.path.endswith("/ListSandboxes"):
            body = b"{}"
        elif mode == "junk-rpc" and self.path.endswith("/CreateSandbox"):
            body = b'{"sandboxId": 12, "status": "yes", "spec": [1, 2, 3]}'
        else:
            body = os.urandom(300)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def proxy(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        rpc = self.path.rsplit("/", 1)[-1]
        with H.lock:
            H.counts[rpc] = H.counts.get(rpc, 0) + 1
            count = H.counts[rpc]
            with open(addr_file + ".bodies", "a") as f:
                f.write(json.dumps({"rpc": rpc, "n": count, "body": body.decode("utf-8", "replace")}) + "\n")
        up = urllib.parse.urlparse(os.environ["FAKESRV_UPSTREAM"])
        c = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
        hdrs = {k: v for k, v in self.headers.items()
                if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")}
        c.request("POST", self.path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        status, rh = r.status, [(k, v) for k, v in r.getheaders()
                                if k.lower() not in ("connection", "content-length", "transfer-encoding", "keep-alive")]
        c.close()
        if (rpc == "CreateSandbox" and count == 1) or (rpc == "GetSandbox" and count % 2 == 1):
            status, rh = 503, [("content-type", "application/json")]
            data = b'{"code":"unavailable","message":"injected by fakesrv: answer lost"}'
        self.send_response(status)
        for k, v in rh:
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = answer
    do_GET = answer

    def log_message(self, *a):
        pass


def raw_server():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def main():
    if mode in ("junk", "junk-rpc", "record", "flaky"):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        port = srv.server_address[1]
        run = srv.serve_forever
    else:
        s = raw_server()
        port = s.getsockname()[1]

        def serve(c):
            try:
                c.settimeout(60)
                c.recv(65536)
                if mode == "raw":
                    c.sendall(os.urandom(500))
                    c.close()
                else:
                    time.sleep(3600)
            except OSError:
                pass

        def run():
            while True:
                c, _ = s.accept()
                threading.Thread(target=serve, args=(c,), daemon=True).start()

    tmp = addr_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("http://127.0.0.1:%d\n" % port)
    os.rename(tmp, addr_file)
    run()


if __name__ == "__main__":
    main()
