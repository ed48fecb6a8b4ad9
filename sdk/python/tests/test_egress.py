"""Egress by allow-list: ``network={"allow": [...]}`` and ``Sandbox.egress()``."""

import http.server
import threading
from typing import Iterator, Tuple

import pytest

import repobox
from repobox import Egress


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hello_server() -> Iterator[Tuple[int, http.server.ThreadingHTTPServer]]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1], srv
    finally:
        srv.shutdown()


FETCH = (
    "python3 -c 'import urllib.request as u, sys\n"
    "try: print(u.urlopen(sys.argv[1], timeout=20).read().decode())\n"
    "except Exception as e: print(\"failed\", getattr(e, \"code\", e))' {}"
)


def test_an_allow_list_reaches_its_host_and_reports_its_decisions(
    client: repobox.Client, repo_url: str, hello_server: Tuple[int, object]
) -> None:
    port, _ = hello_server
    allow = ["pinned.test:{}".format(port)]
    with client.create(repo_url, network={"allow": allow}, max_runtime_secs=600) as box:
        assert box.network == {"allow": allow}
        assert box.exec(FETCH.format("http://pinned.test:{}/".format(port))).stdout == "hello\n"
        refused = box.exec(FETCH.format("http://other.test:{}/".format(port))).stdout
        assert refused == "failed 403\n"
        egress = box.egress()
        assert isinstance(egress, Egress)
        assert egress.allow == allow
        assert [(d.host, d.port, d.allowed) for d in egress.decisions] == [
            ("pinned.test", port, True),
            ("other.test", port, False),
        ]
        assert egress.decisions[1].reason


def test_an_allow_list_outside_the_servers_is_refused(client: repobox.Client, repo_url: str) -> None:
    with pytest.raises(repobox.RepoboxError) as refused:
        client.create(repo_url, network={"allow": ["10.0.0.1"]})
    assert refused.value.status == 403
