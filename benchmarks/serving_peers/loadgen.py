"""Load generators for benchmarks/serving.py (127.0.0.1 only, bounded).

``closed_loop``: shared/peers/serving/loadgen.py's closed loop (aiohttp, C clients on
keep-alive connections, each sends, reads the whole answer, sends again; ``warmup`` s
unrecorded, then ``duration`` s recorded; a request counts when it completes in the window;
the server process tree's CPU seconds over the window from /proc). Adapted: the caller gives
the pre-serialised bodies (loopml's ``{"inputs": row}``, the peers' ``{"input": row}``,
MLflow's ``{"inputs": [row]}``), and an answer is accepted when it holds 10 numbers under
``output``, ``probabilities`` or ``predictions`` (or is a bare list).

``open_loop``: requests at a fixed rate whatever the answers (the overload test). ``conns``
keep-alive connections, one request in flight on each; a request due when every connection
is busy is not sent and counted as ``unsent``. Status codes are counted; latency is send ->
complete answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import aiohttp


def proc_tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            parent[int(d)] = int(s[s.rfind(")") + 2 :].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree.append(c)
                frontier.append(c)
    return tree


def proc_tree_cpu(root: int) -> float:
    """CPU seconds (user + system, incl. waited-for children) of ``root`` and its descendants."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in proc_tree(root):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        total += sum(int(v) for v in s[s.rfind(")") + 2 :].split()[11:15]) / tck
    return total


def proc_tree_memory(root: int) -> dict:
    """PSS, RSS and peak RSS (VmHWM) in MiB summed over the tree, and its number of processes."""
    pss = rss = hwm = n = 0
    for p in proc_tree(root):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
            n += 1
        except OSError:
            continue
    return {"pss_mb": pss / 1024, "rss_mb": rss / 1024, "peak_rss_mb": hwm / 1024, "procs": n}


def pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def answer_ok(data: bytes) -> bool:
    out = json.loads(data)
    if isinstance(out, dict) and out.get("status") == "abstain":  # loopml's OOD gate: a valid answer
        return True
    if isinstance(out, dict):
        for key in ("output", "probabilities", "predictions"):
            if key in out:
                out = out[key]
                break
    if isinstance(out, list) and len(out) == 1 and isinstance(out[0], list):
        out = out[0]
    return isinstance(out, list) and len(out) == 10


async def closed_loop(url: str, bodies: list[bytes], conc: int, warmup: float, duration: float, pid: int,
                      timeout: float = 10.0) -> dict:
    lat: list[float] = []
    errors = 0
    err_samples: list[str] = []
    conn = aiohttp.TCPConnector(limit=conc, force_close=False)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as sess:
        w_start = time.perf_counter() + warmup
        w_end = w_start + duration
        marks: dict[str, float] = {}

        async def sampler() -> None:
            await asyncio.sleep(max(0.0, w_start - time.perf_counter()))
            marks["c0"], marks["s0"] = time.process_time(), proc_tree_cpu(pid)
            await asyncio.sleep(max(0.0, w_end - time.perf_counter()))
            marks["c1"], marks["s1"] = time.process_time(), proc_tree_cpu(pid)

        async def client(i: int) -> None:
            nonlocal errors
            k = i * 7919
            while True:
                t0 = time.perf_counter()
                if t0 >= w_end:
                    return
                body = bodies[k % len(bodies)]
                k += 1
                ok = False
                try:
                    async with sess.post(url, data=body, headers=headers) as r:
                        data = await r.read()
                        ok = r.status == 200 and answer_ok(data)
                        if not ok and len(err_samples) < 3:
                            err_samples.append(f"{r.status}: {data[:200]!r}")
                except Exception as e:  # timeouts, resets
                    if len(err_samples) < 3:
                        err_samples.append(repr(e)[:200])
                t1 = time.perf_counter()
                if w_start <= t1 < w_end:
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors += 1
                if not ok:
                    await asyncio.sleep(0.01)

        await asyncio.gather(sampler(), *(client(i) for i in range(conc)))
    lat.sort()
    n = len(lat)
    server_cpu = marks["s1"] - marks["s0"]
    return {
        "rps": n / duration,
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "cpu_us": server_cpu / n * 1e6 if n else float("nan"),
        "server_cores": server_cpu / duration,
        "client_cores": (marks["c1"] - marks["c0"]) / duration,
        "errors": errors,
        "err_samples": err_samples,
    }


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight (Content-Length answers)."""

    def __init__(self, done) -> None:
        self.done = done
        self.buf = b""
        self.t0 = 0.0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            status = int(self.buf[9:12])
            self.buf = self.buf[end + 4 + length :]
            self.done(self, status, time.perf_counter() - self.t0)

    def connection_lost(self, exc) -> None:
        self.done(self, -1, 0.0)


async def open_loop(port: int, path: str, bodies: list[bytes], rate: float, duration: float, conns: int = 256,
                    max_requests: int = 400_000, sample=None) -> dict:
    """Send ``rate`` requests/s for ``duration`` s (at most ``max_requests``) on ``conns`` connections."""
    loop = asyncio.get_running_loop()
    idle: list[_Conn] = []
    statuses: dict[int, int] = {}
    lat_by_half: tuple[list[float], list[float]] = ([], [])
    t_start = 0.0

    def done(c: _Conn, status: int, latency: float) -> None:
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            lat_by_half[0 if c.t0 - t_start < duration / 2 else 1].append(latency)
        if status != -1:
            idle.append(c)

    for _ in range(conns):
        _, proto = await loop.create_connection(lambda: _Conn(done), "127.0.0.1", port)
        idle.append(proto)
    await asyncio.sleep(1.0)  # let the idle server accept every connection before the load starts
    reqs = [b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), len(b), b) for b in bodies]
    total = min(max_requests, int(rate * duration))
    sent = unsent = 0
    samples = []
    gaps = []  # the client's own loop: time between its passes (a saturated client adds this to every latency)
    t_start = time.perf_counter()
    next_sample = t_start
    last = t_start
    while sent + unsent < total:
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        due = min(total, int((now - t_start) * rate) + 1)
        while sent + unsent < due:
            if idle:
                c = idle.pop()
                c.t0 = now
                c.transport.write(reqs[(sent + unsent) % len(reqs)])
                sent += 1
            else:
                unsent += 1
        if sample is not None and now >= next_sample:
            samples.append(sample())
            next_sample = now + 0.5
        await asyncio.sleep(0.0005)
    deadline = time.perf_counter() + 10.0
    while len(idle) < conns and time.perf_counter() < deadline and sum(statuses.values()) < sent:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t_start
    for c in set(idle):
        c.transport.close()
    first, second = sorted(lat_by_half[0]), sorted(lat_by_half[1])
    both = sorted(first + second)
    return {
        "offered_rps": total / duration, "sent": sent, "unsent": unsent, "answered": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())}, "ok_rps": len(both) / elapsed,
        "p50_ms": pct(both, 50) * 1e3, "p99_ms": pct(both, 99) * 1e3,
        "p99_first_half_ms": pct(first, 99) * 1e3, "p99_second_half_ms": pct(second, 99) * 1e3,
        "client_gap_p99_ms": pct(sorted(gaps), 99) * 1e3, "client_gap_max_ms": max(gaps, default=0.0) * 1e3,
        "samples": samples,
    }
