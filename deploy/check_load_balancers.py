"""Run deploy/'s HAProxy and nginx configurations in front of two ``loopml serve`` and restart one under load.

Not a test: it needs ``haproxy`` and ``nginx`` on PATH (Debian: ``apt-get install haproxy
nginx-light``), which the suite does not install. It registers a tiny model in the store of
LOOPML_TRACKING_URI (default: a fresh SQLite file in a temporary folder), starts two model
servers on 127.0.0.1, both load balancers with the configurations from deploy/ (their ports
moved to free ones, the token left out), sends predictions through each from two threads,
stops one server with SIGTERM, starts it again, and prints what each client got. Usage::

    python deploy/check_load_balancers.py          # docs/deployment.md#behind-a-load-balancer
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
HOST = {"Host": "models.internal"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register(env: dict[str, str]) -> None:
    code = (
        "import torch, loopml\n"
        "torch.manual_seed(0)\n"
        "m = torch.nn.Sequential(torch.nn.Linear(8, 3)).eval()\n"
        "v = loopml.register(m, 'scorer', input_example=torch.randn(4, 8), formats=('pt2',))\n"
        "loopml.models.set_alias('scorer', 'production', v.version)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def serve(port: int, env: dict[str, str]) -> "subprocess.Popen[str]":
    proc = subprocess.Popen([sys.executable, "-m", "loopml", "serve", "scorer@production", "--port", str(port),
                             "--allowed-host", "models.internal", "--no-gate"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # listening
    proc.stdout.readline()  # ready
    return proc


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="loopml-lb-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOOPML_HOME": str(tmp / "home")}
    env.setdefault("LOOPML_TRACKING_URI", f"sqlite:///{tmp / 'loopml.db'}")
    register(env)
    a, b, hap_port, ngx_port = (free_port() for _ in range(4))
    servers = {a: serve(a, env), b: serve(b, env)}
    ports = {"8081": str(a), "8082": str(b)}

    def moved(text: str) -> str:
        return re.sub(r"127\.0\.0\.1:(8081|8082)", lambda m: f"127.0.0.1:{ports[m.group(1)]}", text)

    hap = moved((HERE / "haproxy" / "loopml-models.cfg").read_text()).replace("bind :80", f"bind 127.0.0.1:{hap_port}")
    hap = re.sub(r' hdr Authorization "[^"]*"', "", hap)
    (tmp / "haproxy.cfg").write_text(hap)
    ngx = moved((HERE / "nginx" / "loopml-models.conf").read_text()).replace("listen 80;", f"listen 127.0.0.1:{ngx_port};")
    (tmp / "site.conf").write_text(ngx)
    (tmp / "nginx.conf").write_text(f"daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/nginx.log;\nevents {{}}\n"
                                    f"http {{\naccess_log off;\ninclude {tmp}/site.conf;\n}}\n")
    balancers = [subprocess.Popen(["haproxy", "-f", str(tmp / "haproxy.cfg")]),
                 subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf")])]
    results: dict[str, list[object]] = {"haproxy": [], "nginx": []}
    stop = threading.Event()
    try:
        for port in (hap_port, ngx_port):  # both answer before the clients start (HAProxy's checks have run)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", headers=HOST).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"nothing answers on {port}"
                stop.wait(0.05)

        def send(name: str, port: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HOST, timeout=30) as c:
                while not stop.is_set():
                    try:
                        results[name].append(c.post("/v1/models/scorer/predict", json={"inputs": [0.1] * 8}).status_code)
                    except httpx.HTTPError as exc:
                        results[name].append(type(exc).__name__)

        clients = [threading.Thread(target=send, args=(n, p)) for n, p in (("haproxy", hap_port), ("nginx", ngx_port))
                   for _ in range(2)]
        for t in clients:
            t.start()
        stop.wait(1.0)
        servers[a].send_signal(signal.SIGTERM)
        servers[a].wait()
        stop.wait(2.0)
        servers[a] = serve(a, env)  # back, as systemd's Restart= would bring it
        stop.wait(3.0)
        stop.set()
        for t in clients:
            t.join()
        for name, got in results.items():
            print(f"{name}: {dict(Counter(got))}")
    finally:
        stop.set()
        for p in [*balancers, *servers.values()]:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
