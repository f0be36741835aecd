#!/usr/bin/env python3
"""fake_replica.py - stands in for llava-server behind scripts/cluster.sh in
tests/cluster/test_routing.py: takes the flags cluster.sh passes (--port,
--replica-id; the rest ignored) and answers

  GET  /health  200, or 503 while the file $FAKE_STATE_DIR/<id>.down exists
  POST any      {"replica", "path", "conversation" (the balancer's
                X-Llava-Conversation header, or null), "bytes"} with
                X-Replica-Id; a body holding "stream": true is answered as
                an SSE stream: one event at once, the second one second later
  GET  other    the same JSON

so the test sees where the balancer sent each request and with which key.
"""

import http.server
import json
import os
import signal
import sys
import time


def arg(name, default=None):
    a = sys.argv
    return a[a.index(name) + 1] if name in a else default


PORT = int(arg("--port", "0"))
RID = arg("--replica-id", "r?")
STATE = os.environ.get("FAKE_STATE_DIR", "")


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Replica-Id", RID)
        self.end_headers()
        self.wfile.write(body)

    def info(self, n):
        return {"replica": RID, "path": self.path, "bytes": n,
                "conversation": self.headers.get("X-Llava-Conversation")}

    def do_GET(self):
        if self.path == "/health":
            down = STATE and os.path.exists(os.path.join(STATE, RID + ".down"))
            return self.reply(503 if down else 200, {"status": "down" if down else "healthy"})
        self.reply(200, self.info(0))

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if b'"stream": true' in body or b'"stream":true' in body:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Replica-Id", RID)
            self.end_headers()
            for i, ev in enumerate([b"data: first\n\n", b"data: [DONE]\n\n"]):
                if i:
                    time.sleep(1.0)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        self.reply(200, self.info(n))


signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
srv = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), H)
print("fake replica %s listening on %d" % (RID, PORT), file=sys.stderr, flush=True)
srv.serve_forever()
