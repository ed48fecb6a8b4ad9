"""Ports: the listening ports of a sandbox, and URLs that reach them."""

import time

import httpx

import repobox
from repobox import Port, Sandbox


def _wait_for_port(box: Sandbox, port: int, timeout: float = 30.0) -> Port:
    deadline = time.monotonic() + timeout
    while True:
        for listed in box.ports():
            if listed.port == port:
                return listed
        assert time.monotonic() < deadline, "port {} never listened".format(port)
        time.sleep(0.2)


def test_ports_and_port_url(box: Sandbox, client: repobox.Client) -> None:
    box.write_file("/tmp/site/index.html", "<h1>from the sandbox</h1>")
    box.processes.start("cd /tmp/site && exec python3 -m http.server 3000 --bind 127.0.0.1")
    listed = _wait_for_port(box, 3000)
    assert isinstance(listed, Port)
    assert listed.process is not None and "http.server 3000" in listed.process
    assert listed.pid is not None
    assert listed.addresses == ["127.0.0.1"]

    url = box.port_url(3000)
    assert url == "{}/api/v1/containers/{}/ports/3000/".format(client.url.rstrip("/"), box.container_id)
    page = httpx.get(url, timeout=30)
    assert page.status_code == 200
    assert "from the sandbox" in page.text
    assert box.port_url(3000, "/index.html").endswith("/ports/3000/index.html")


def test_port_url_carries_the_key_for_browsers() -> None:
    with repobox.Client("http://127.0.0.1:9", api_key="k/1") as c:
        box = repobox.Sandbox._bind(c, repobox.ContainerInfo(container_id="box-1"))
        assert box.port_url(8080, "a?b=1") == "http://127.0.0.1:9/api/v1/containers/box-1/ports/8080/a?b=1&access_token=k%2F1"
        assert box.port_url(8080, with_token=False) == "http://127.0.0.1:9/api/v1/containers/box-1/ports/8080/"
