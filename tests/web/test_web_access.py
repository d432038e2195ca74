"""Who can open the graphs page: the real `vuegraf` process, reached from this host and from
another host (a network namespace with a veth link, so the packets really arrive on a
non-loopback interface), and what its answers never hold.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.inprocess import write_simulator_config
from servers import free_ports, poll_until, require_binary
from vuegraf.simulator import SimulatorServer

pytestmark = pytest.mark.integration

EMPORIA_PASSWORD = "emporia-Secret-7f3a"
WEB_PASSWORD = "web-Secret-91c2"

# What "another host" runs: one GET, printing the status (or "refused").
CLIENT = r"""
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    req.add_header("Authorization", sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError as e:
    print("refused" if "refused" in str(e).lower() else f"error {e}")
"""


class OtherHost:
    """A network namespace joined to this host by a veth pair: `host_ip` is this host's
    address on the link, `get` runs an HTTP GET from the other side."""

    def __init__(self) -> None:
        ip = require_binary("ip")
        self.ip = ip
        tag = f"{os.getpid() % 100000}{random.randrange(100)}"
        self.ns = f"vgw{tag}"
        self.veth = f"vgw{tag}h"
        for _ in range(20):
            net = random.randrange(1, 250)
            self.host_ip, self.other_ip = f"10.231.{net}.1", f"10.231.{net}.2"
            used = subprocess.run([ip, "-4", "addr"], capture_output=True, text=True).stdout
            if f"10.231.{net}." not in used:
                break
        steps = [
            [ip, "netns", "add", self.ns],
            [ip, "link", "add", self.veth, "type", "veth", "peer", "name", "eth9", "netns",
             self.ns],
            [ip, "addr", "add", f"{self.host_ip}/30", "dev", self.veth],
            [ip, "link", "set", self.veth, "up"],
            [ip, "-n", self.ns, "addr", "add", f"{self.other_ip}/30", "dev", "eth9"],
            [ip, "-n", self.ns, "link", "set", "eth9", "up"],
            [ip, "-n", self.ns, "link", "set", "lo", "up"],
        ]
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)

    def get(self, url: str, authorization: str | None = None) -> str:
        cmd = [self.ip, "netns", "exec", self.ns, sys.executable, "-c", CLIENT, url]
        if authorization:
            cmd.append(authorization)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()

    def close(self) -> None:
        subprocess.run([self.ip, "link", "del", self.veth], capture_output=True)
        subprocess.run([self.ip, "netns", "del", self.ns], capture_output=True)


@pytest.fixture
def other_host() -> Iterator[OtherHost]:
    host = OtherHost()
    try:
        yield host
    finally:
        host.close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(url: str, authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url)
    if authorization:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def start_vuegraf(tmp_path: Path, sim_url: str, web: dict[str, object]) -> subprocess.Popen[bytes]:
    config = write_simulator_config(tmp_path, sim_url, {"web": web})
    data = json.loads(config.read_text())
    data["accounts"][0]["password"] = EMPORIA_PASSWORD
    config.write_text(json.dumps(data))
    log = open(tmp_path / "vuegraf.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "vuegraf", str(config), "-v"], stdout=log, stderr=log
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_layout(url: str, authorization: str | None, tmp_path: Path) -> dict[str, object]:
    def fetch() -> dict[str, object] | None:
        try:
            status, _h, body = get(url + "/api/layout", authorization)
        except OSError:
            return None
        layout = json.loads(body) if status == 200 else None
        return layout if layout and layout["accounts"][0]["devices"] else None

    return poll_until(
        fetch,
        lambda answer: answer is not None,
        timeout=120,
        interval=0.5,
        describe=lambda _a: (tmp_path / "vuegraf.log").read_text()[-3000:],
    )


def test_the_default_page_is_not_reachable_from_another_host(tmp_path, other_host):
    (port,) = free_ports(1)
    with SimulatorServer() as sim:
        proc = start_vuegraf(tmp_path, sim.url, {"port": port})
        try:
            wait_for_layout(f"http://127.0.0.1:{port}", None, tmp_path)
            # The same port on this host's address on the link: nothing listens there.
            assert other_host.get(f"http://{other_host.host_ip}:{port}/") == "refused"
            assert other_host.get(f"http://{other_host.host_ip}:{port}/api/layout") == "refused"
            status, _h, body = get(f"http://127.0.0.1:{port}/")
            assert status == 200 and b"<html" in body.lower()
        finally:
            stop(proc)


def test_an_opened_page_wants_its_password_and_never_shows_a_secret(tmp_path, other_host):
    (port,) = free_ports(1)
    auth = basic("viewer", WEB_PASSWORD)
    with SimulatorServer() as sim:
        proc = start_vuegraf(
            tmp_path,
            sim.url,
            {"port": port, "address": "0.0.0.0", "username": "viewer", "password": WEB_PASSWORD},
        )
        try:
            local = f"http://127.0.0.1:{port}"
            layout = wait_for_layout(local, auth, tmp_path)
            remote = f"http://{other_host.host_ip}:{port}"
            assert other_host.get(remote + "/") == "401"
            assert other_host.get(remote + "/api/layout") == "401"
            assert other_host.get(remote + "/", basic("viewer", "wrong")) == "401"
            assert other_host.get(remote + "/", basic("someone", WEB_PASSWORD)) == "401"
            assert other_host.get(remote + "/api/now", auth) == "200"
            status, headers, body = get(local + "/static/app.js")
            assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
            assert WEB_PASSWORD.encode() not in body

            # Every answer the page can get, with the password: no secret in any of them.
            urls = ["/", "/api/layout", "/api/now", "/static/../server.py", "/nothing"]
            for account in layout["accounts"]:  # type: ignore[attr-defined]
                name = urllib.parse.quote(account["name"])
                for device in account["devices"]:
                    dev = urllib.parse.quote(device["id"])
                    urls.append(f"/api/totals?account={name}&device={dev}")
                    for view in ("day", "week", "month", "year"):
                        urls.append(f"/api/graph?account={name}&device={dev}&view={view}")
            statuses = {}
            for url in urls:
                status, headers, body = get(local + url, auth)
                statuses[url] = status
                text = body.decode("utf-8", "replace") + json.dumps(headers)
                for secret in (EMPORIA_PASSWORD, WEB_PASSWORD, "me@example.com"):
                    assert secret not in text, (url, secret)
            assert statuses["/"] == 200
            assert statuses["/static/../server.py"] == 404
            assert statuses["/nothing"] == 404
            assert all(s == 200 for u, s in statuses.items() if u.startswith("/api"))
        finally:
            stop(proc)
        log = (tmp_path / "vuegraf.log").read_text()
        assert WEB_PASSWORD not in log and EMPORIA_PASSWORD not in log
        saved = json.loads((tmp_path / "state" / "layout.json").read_text())
        assert [d["id"] for d in saved[0]["devices"]] == [
            d["id"] for d in layout["accounts"][0]["devices"]  # type: ignore[index]
        ]
