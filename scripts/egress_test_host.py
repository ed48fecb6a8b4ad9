#!/usr/bin/env python3
"""A stand-in "internet host" for the end-to-end tests (tests/e2e/support/netns.rs).

Run inside a network namespace of its own (`ip netns exec NS python3 egress_test_host.py
...`), it serves HTTP and HTTPS (the certificate is made by the test) with:

  GET /hello                       -> "hello from <name>\n" (text/plain)
  GET /simple/                     -> a PEP 503 simple index listing one project, tinypkg
  GET /simple/tinypkg/             -> a link to the wheel, with its sha256
  GET /packages/tinypkg-1.0-py3-none-any.whl -> a minimal valid wheel, made at start-up

Every request it reads is logged as one line, "METHOD path host-header" ("-" when
there is no Host header), flushed at once, so that a test can tell what did reach it
and, as much, what did not. Standard library only: the tests must not need a package.

It exits by itself when the process that started it goes (the test binary may be
killed before its fixtures are dropped).
"""

import argparse
import base64
import hashlib
import html
import io
import os
import ssl
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WHEEL_NAME = "tinypkg-1.0-py3-none-any.whl"


def build_wheel():
    """A pure-Python wheel of `tinypkg` 1.0, byte-for-byte the same on every run."""
    files = {
        "tinypkg/__init__.py": b'"""A package served by the egress test host."""\n\n__version__ = "1.0"\n',
        "tinypkg-1.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n"
            b"Summary: A package served by repobox's egress test host\n"
        ),
        "tinypkg-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: egress_test_host\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    files["tinypkg-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            # A fixed date: the same bytes, so the same sha256, every time.
            info = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            wheel.writestr(info, data)
    return out.getvalue()


def make_handler(name, log, wheel):
    wheel_sha256 = hashlib.sha256(wheel).hexdigest()
    log_lock = threading.Lock()

    def page(title, links):
        body = "".join(f'    <a href="{html.escape(href)}">{html.escape(text)}</a><br>\n' for href, text in links)
        return (
            f"<!DOCTYPE html>\n<html>\n  <head><title>{html.escape(title)}</title></head>\n"
            f"  <body>\n{body}  </body>\n</html>\n"
        ).encode()

    routes = {
        "/hello": ("text/plain; charset=utf-8", f"hello from {name}\n".encode()),
        "/simple/": ("text/html; charset=utf-8", page("Simple index", [("/simple/tinypkg/", "tinypkg")])),
        "/simple/tinypkg/": (
            "text/html; charset=utf-8",
            page("Links for tinypkg", [(f"/packages/{WHEEL_NAME}#sha256={wheel_sha256}", WHEEL_NAME)]),
        ),
        f"/packages/{WHEEL_NAME}": ("application/octet-stream", wheel),
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "egress-test-host/1"
        protocol_version = "HTTP/1.1"
        timeout = 30

        def parse_request(self):
            # Here rather than in do_GET: a request of any method (CONNECT, POST...) is
            # logged, also one the server then refuses.
            ok = super().parse_request()
            if ok:
                line = f"{self.command} {self.path} {self.headers.get('Host', '-')}\n"
                with log_lock:
                    log.write(line)
                    log.flush()
            return ok

        def answer(self, with_body):
            path = self.path.split("?", 1)[0]
            if path in ("/simple", "/simple/tinypkg"):
                self.send_response(301)
                self.send_header("Location", path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            content_type, body = routes.get(path, ("text/plain; charset=utf-8", None))
            status = 200
            if body is None:
                status, body = 404, b"not found\n"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self):
            self.answer(True)

        def do_HEAD(self):
            self.answer(False)

        def log_message(self, format, *args):
            pass  # the request log above is the one that counts

    return Handler


class TLSServer(ThreadingHTTPServer):
    """HTTPS, with each handshake in the request's own thread: a client that connects
    and says nothing (a readiness probe) must not hold up the others."""

    def __init__(self, address, handler, context):
        super().__init__(address, handler)
        self.context = context

    def get_request(self):
        sock, address = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request, client_address):
        request.settimeout(30)
        request.do_handshake()
        super().finish_request(request, client_address)


def quiet_errors(server):
    def handle_error(request, client_address):
        kind, error, _ = sys.exc_info()
        print(f"{client_address[0]}: {kind.__name__}: {error}", file=sys.stderr, flush=True)

    server.handle_error = handle_error
    return server


def exit_with_parent():
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the host's name, for /hello")
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--log", required=True, help="request log, appended to")
    parser.add_argument("--http-port", type=int, default=80)
    parser.add_argument("--https-port", type=int, default=443)
    args = parser.parse_args()

    wheel = build_wheel()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    log = open(args.log, "a", encoding="utf-8")
    handler = make_handler(args.name, log, wheel)
    servers = [
        quiet_errors(ThreadingHTTPServer(("0.0.0.0", args.http_port), handler)),
        quiet_errors(TLSServer(("0.0.0.0", args.https_port), handler, context)),
    ]
    threading.Thread(target=exit_with_parent, daemon=True).start()
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
