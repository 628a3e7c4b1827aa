"""Flower's deployment engine on 127.0.0.1: one SuperLink, N SuperNodes, runs of one Flower app.

loopml starts the processes, waits until they are ready, runs the app with ``flwr run``
and stops every process it started (and their children) when it is done, fails, runs
past its time limit or is interrupted. Each process writes to its own log file in the
work folder; nothing of Flower's output reaches loopml's user unless ``log`` is given.
Example::

    app = write_app(folder / "app", serverapp="loopml.federated.apps:serverapp",
                    clientapp="loopml.federated.apps:clientapp", config={"loopml-job": str(job)})
    report = run_deployment(app, node_configs=[{"partition-id": i, "num-partitions": 2} for i in range(2)],
                            run_config={"loopml-job": str(job)}, timeout=600, workdir=folder / "deployment")
    report.superlink_ready_s, report.nodes_connected_s, report.run_s

What loopml starts here (Flower 1.42, which serves the Fleet, Control and Runtime APIs
of the SuperLink over HTTP on one port)::

    flower-superlink --insecure --host 127.0.0.1 --port P --disable-runtime-dependency-installation
    flower-supernode --insecure --superlink 127.0.0.1:P --host 127.0.0.1 --port Q_i \\
                     --node-config "partition-id=0 num-partitions=2"
    flwr run APP_DIR loopml-local --stream --run-config run-config.toml

with ``$FLWR_HOME/config.toml`` naming the SuperLink (``[superlink.loopml-local]
address = "127.0.0.1:P"``, ``insecure = true``). Every port is a free ephemeral port, so
that parallel deployments never collide. The SuperLink starts ``flower-superexec``, and
each SuperNode its own, by name: the bin folder of the running Python goes first on PATH.

A real deployment differs in three ways:

- **SuperNodes on other machines.** The SuperLink listens on an address they can reach
  (``--host 0.0.0.0 --port 9092``); each SuperNode runs where its data is, with
  ``--superlink link.example.org:9092`` and its own ``--node-config``.
- **TLS.** The SuperLink drops ``--insecure`` and serves HTTPS with
  ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key`` (the
  certificate's SANs must name the address SuperNodes dial, and 127.0.0.1 for its own
  SuperExec). Each SuperNode drops ``--insecure`` and verifies the SuperLink with
  ``--root-certificates ca.crt``; ``flwr`` does the same through
  ``root-certificates = "ca.crt"`` (and no ``insecure``) in its ``[superlink.<name>]``
  table. A SuperNode's own Runtime API (what its SuperExec dials) takes
  ``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile`` as well.
- **SuperNode authentication.** The SuperLink adds ``--enable-supernode-auth`` (it
  refuses to start without TLS). Each SuperNode has an EC key pair on a NIST curve in
  OpenSSH format (``ssh-keygen -t ecdsa -b 384 -N "" -f node``); its public key is
  registered once with ``flwr supernode register node.pub <superlink>`` and the
  SuperNode starts with ``--auth-supernode-private-key node``. Nodes are listed with
  ``flwr supernode list`` and removed with ``flwr supernode unregister``.

The deployment engine runs on POSIX systems (process groups stop each process's children).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ..errors import ArgumentError, FederatedError

__all__ = ["Deployment", "DeploymentReport", "RunReport", "run_deployment", "write_app"]

CONNECTION = "loopml-local"  # the SuperLink's name in $FLWR_HOME/config.toml
HOST = "127.0.0.1"
GRACE_S = 2.0  # SIGTERM, then SIGKILL after this: SuperNodes took 3-7 s to stop here, with nothing left to save once a run ended
TAIL = 20  # log lines quoted in an error
_KEY = re.compile(r"[A-Za-z0-9_-]+")  # TOML's bare keys: Flower nests dotted keys, loopml keeps them flat
_REF = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PORT_TAKEN = re.compile(r"address already in use|errno (98|48)", re.IGNORECASE)

Scalar = str | int | float | bool


# -- the app folder ---------------------------------------------------------------------------------


def write_app(folder: str | Path, *, serverapp: str, clientapp: str, config: Mapping[str, Scalar] | None = None,
              name: str = "loopml-federation") -> Path:
    """Write the Flower app folder (its ``pyproject.toml``) that ``flwr run`` bundles and sends to the SuperLink.

    ``serverapp`` and ``clientapp`` are references ``"module:attr"`` to a ``ServerApp`` and a
    ``ClientApp``; the module is imported from the Python path of the SuperLink's and SuperNodes'
    processes (an installed package such as loopml), so the folder holds no code. ``config`` is
    the run config's keys with their defaults; ``run_config`` of a run may only override these.

    Example: ``write_app(tmp / "app", serverapp="loopml.federated.apps:serverapp",
    clientapp="loopml.federated.apps:clientapp", config={"loopml-job": "/path/to/job"})``
    """
    for argument, ref in (("serverapp", serverapp), ("clientapp", clientapp)):
        if not isinstance(ref, str) or not _REF.fullmatch(ref):
            raise ArgumentError(f"Argument {argument} should be a reference 'module:attr' such as "
                                f"'loopml.federated.apps:{argument}', not {ref!r}")
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise ArgumentError(f"Argument name should be lowercase letters, digits and '-' (Flower's app names), not {name!r}")
    values = _check_config("config", config or {})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        "# Written by loopml.federated.deployment.write_app; the components live in installed packages.\n"
        f'[project]\nname = "{name}"\nversion = "1.0.0"\ndescription = "A federation run by loopml"\n'
        "\n"
        '[tool.flwr.app]\npublisher = "loopml"\n\n'
        f"[tool.flwr.app.components]\nserverapp = {_toml(serverapp)}\nclientapp = {_toml(clientapp)}\n\n"
        f"[tool.flwr.app.config]\n{_toml_table(values)}"
    )
    (folder / "pyproject.toml").write_text(text, encoding="utf-8")
    return folder


def _check_config(argument: str, config: Mapping[str, Any]) -> dict[str, Scalar]:
    if not isinstance(config, Mapping):
        raise ArgumentError(f"Argument {argument} should be a mapping of names to str, int, float or bool, "
                            f"not {type(config).__name__}")
    out: dict[str, Scalar] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ArgumentError(f"Argument {argument} has the key {key!r}; keys should be letters, digits, '_' "
                                "and '-' (such as 'partition-id')")
        if not isinstance(value, str | int | float | bool):
            raise ArgumentError(f"Argument {argument}[{key!r}] should be a str, int, float or bool, "
                                f"not {type(value).__name__}")
        out[key] = value
    return out


def _toml(value: Scalar) -> str:
    # Flat scalar tables only, so a few lines here instead of a TOML writer dependency; JSON's
    # string escapes are all valid in TOML's basic strings, and repr(float) ('1e-05', 'inf') is TOML.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _toml_table(values: Mapping[str, Scalar]) -> str:
    return "".join(f"{key} = {_toml(value)}\n" for key, value in values.items())


def _node_config_arg(config: Mapping[str, Scalar]) -> str:
    # `--node-config` is parsed by a regex (k=v pairs split on spaces; values quoted '...' or "..."
    # without that quote inside) and then as TOML: a literal string keeps backslashes (Windows paths).
    parts = []
    for key, value in config.items():
        if isinstance(value, str):
            if "'" not in value and "\n" not in value:
                text = f"'{value}'"
            elif '"' not in value:
                text = json.dumps(value, ensure_ascii=False)
            else:
                raise ArgumentError(f"A node config value cannot hold both ' and \" (Flower's --node-config "
                                    f"syntax): {key}={value!r}")
        else:
            text = _toml(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _app_config(app_dir: Path) -> dict[str, Any]:
    path = app_dir / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        config = data["tool"]["flwr"]["app"].get("config", {})
    except FileNotFoundError as exc:
        raise ArgumentError(f"Argument app_dir should be a Flower app folder with a pyproject.toml (write one with "
                            f"loopml.federated.deployment.write_app); {path} does not exist") from exc
    except (tomllib.TOMLDecodeError, KeyError, AttributeError) as exc:
        raise ArgumentError(f"{path} is not a Flower app's pyproject.toml ({exc}); write one with "
                            "loopml.federated.deployment.write_app") from exc
    return dict(config)


# -- reports ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunReport:
    """One run of the app: its Flower run id and status, and how long it took."""

    run_id: str
    status: str  # Flower's, such as "finished:completed"
    run_s: float
    log: Path


@dataclass(frozen=True)
class DeploymentReport:
    """What :func:`run_deployment` did: the timings of each phase, the ports, the logs, the processes."""

    superlink_ready_s: float  # from the SuperLink's start until its health endpoint answers
    nodes_connected_s: float  # from the SuperNodes' start until the SuperLink lists them all online
    run_s: float  # `flwr run` from start to its end
    total_s: float
    run_id: str
    status: str
    port: int
    node_ports: tuple[int, ...]
    workdir: Path
    logs: dict[str, Path] = field(default_factory=dict)
    pids: tuple[int, ...] = ()  # every process stopped at the end (the started ones and their children)


# -- processes --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state), read from /proc or `ps`.

    A few lines instead of psutil (not a dependency of loopml): the children to stop are found by
    walking parents, since Flower starts SuperExec in a session of its own.
    """
    table: dict[int, tuple[int, int, str]] = {}
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()  # the name in (...) may hold spaces
            table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
        return table
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            table[int(parts[0])] = (int(parts[1]), int(parts[2]), parts[3])
    return table


def _descendants(roots: Sequence[int], table: Mapping[int, tuple[int, int, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def alive(pid: int, table: Mapping[int, tuple[int, int, str]] | None = None) -> bool:
    """Whether ``pid`` still runs (a zombie, dead but not yet reaped by its parent, does not)."""
    table = _process_table() if table is None else table
    return pid in table and not table[pid][2].startswith("Z")


class _Proc:
    """A started Flower process: its Popen, its name, its log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: Mapping[str, str], cwd: Path) -> None:
        self.name, self.cmd, self.log = name, cmd, log
        with log.open("ab") as out:
            # its own session: a signal to the group reaches the process and every child it did not detach
            self.popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=dict(env), cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        return self.popen.poll()


def _tail(path: Path, lines: int = TAIL) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    rows = [_ANSI.sub("", row).rstrip() for row in text.splitlines()]
    return "\n".join(row for row in rows[-lines:]) or "(empty log)"


# -- the deployment ---------------------------------------------------------------------------------


class Deployment:
    """A SuperLink and N SuperNodes on 127.0.0.1, started on ``with`` and stopped on leaving it.

    ``node_configs`` holds one mapping per SuperNode (its ``--node-config``, read by a
    ClientApp as ``context.node_config``). Starting is bounded by ``timeout`` seconds; each
    :meth:`run` has its own. Every process writes to a log file in ``workdir``; ``log`` (when
    given) receives loopml's progress lines and the streamed output of each run. ``env`` is
    added to the environment of every process (``PYTHONPATH``, ``TMPDIR``, ...). Example::

        with Deployment(node_configs=[{"partition-id": 0}, {"partition-id": 1}], workdir=tmp) as fed:
            fed.run(app_dir, run_config={"out": "result.json"}, timeout=120)
    """

    def __init__(self, *, node_configs: Sequence[Mapping[str, Scalar]], workdir: str | Path, timeout: float = 120.0,
                 env: Mapping[str, str] | None = None, log: Callable[[str], None] | None = None,
                 grace: float = GRACE_S) -> None:
        if isinstance(node_configs, Mapping | str) or not isinstance(node_configs, Sequence) or not node_configs:
            raise ArgumentError("Argument node_configs should be a non-empty list with one mapping per SuperNode, "
                                "such as [{'partition-id': 0, 'num-partitions': 2}, {'partition-id': 1, "
                                "'num-partitions': 2}]")
        self.node_configs = [_check_config(f"node_configs[{i}]", c) for i, c in enumerate(node_configs)]
        self.node_args = [_node_config_arg(c) for c in self.node_configs]
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ArgumentError(f"Argument timeout should be a number of seconds > 0, not {timeout!r}")
        if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ArgumentError("Argument env should map environment variable names to str values")
        self.workdir = Path(workdir).resolve()
        self.timeout, self.grace, self._log = float(timeout), float(grace), log
        self.flwr_home = self.workdir / "flwr-home"
        self.env = self._environment(env or {})
        self.port = 0
        self.node_ports: list[int] = []
        self.procs: list[_Proc] = []
        self.stopped_pids: tuple[int, ...] = ()
        self.superlink_ready_s = self.nodes_connected_s = 0.0
        self._runs = 0
        self._run_ids: set[str] = set()
        self._closed = False

    # -- setup --

    def _environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLWR_INTERNAL_")}  # legacy gRPC servers
        env.update(extra)
        env["FLWR_TELEMETRY_ENABLED"] = "0"
        env["FLWR_HOME"] = str(self.flwr_home)
        # The SuperLink and SuperNodes start flower-superexec by name: the running Python's tools go first.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
        env.setdefault("PYTHONUNBUFFERED", "1")  # log files fill as things happen, so a tail says why
        return env

    def _say(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def _tool(self, name: str) -> str:
        path = Path(sys.executable).parent / name
        return str(path) if path.exists() else name

    def _start(self, name: str, cmd: list[str]) -> _Proc:
        proc = _Proc(name, cmd, self.workdir / f"{name}.log", self.env, self.workdir)
        self.procs.append(proc)
        return proc

    def _fail(self, what: str, proc: _Proc | None = None, log: Path | None = None) -> FederatedError:
        log = proc.log if proc is not None else log
        where = f"\nThe last lines of {log}:\n{_tail(log)}" if log is not None else ""
        return FederatedError(f"The deployment engine failed: {what}.{where}")

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.name.startswith("run-"):
                continue  # `flwr run` ends by design; the SuperLink and SuperNodes must not
            code = proc.exited()
            if code is not None:
                taken = _PORT_TAKEN.search(_tail(proc.log, 200))
                raise self._fail(f"the {proc.name} process exited early with status {code}"
                                 + (" (its port on 127.0.0.1 was taken by another program; run again)" if taken else ""),
                                 proc)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start the SuperLink, wait until it answers, start the SuperNodes and wait until all are online."""
        if self.procs or self._closed:
            raise FederatedError("This Deployment was already started; make a new one")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        self.port = _free_port()
        (self.flwr_home / "config.toml").write_text(
            f"[superlink]\ndefault = {_toml(CONNECTION)}\n\n[superlink.{CONNECTION}]\n"
            f"address = {_toml(f'{HOST}:{self.port}')}\ninsecure = true\n", encoding="utf-8")
        t0 = time.monotonic()
        link = self._start("superlink", [self._tool("flower-superlink"), "--insecure", "--host", HOST,
                                         "--port", str(self.port), "--disable-runtime-dependency-installation"])
        while not self._healthy():
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._fail(f"the SuperLink did not answer on {HOST}:{self.port} within the time limit "
                                 f"({self.timeout:g} s)", link)
            time.sleep(0.1)
        self.superlink_ready_s = time.monotonic() - t0
        self._say(f"SuperLink ready on {HOST}:{self.port} in {self.superlink_ready_s:.1f} s")

        t0 = time.monotonic()
        for i, node_arg in enumerate(self.node_args):
            port = _free_port()
            self.node_ports.append(port)
            self._start(f"supernode-{i}", [self._tool("flower-supernode"), "--insecure", "--superlink",
                                           f"{HOST}:{self.port}", "--host", HOST, "--port", str(port),
                                           "--node-config", node_arg])
        want = len(self.node_args)
        while True:
            online = self._online_nodes(deadline)
            if online >= want:
                break
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._fail(f"{online} of {want} SuperNodes connected within the time limit ({self.timeout:g} s)",
                                 link)
            time.sleep(0.2)
        self.nodes_connected_s = time.monotonic() - t0
        self._say(f"{want} SuperNodes connected in {self.nodes_connected_s:.1f} s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=1.0) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _flwr(self, args: list[str], deadline: float, what: str) -> Any:
        """Run a `flwr` command with JSON output; its parsed answer."""
        name = f"flwr-{args[0]}"
        try:
            done = subprocess.run([self._tool("flwr"), *args, "--format", "json"], capture_output=True, text=True,
                                  env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                  timeout=max(1.0, deadline - time.monotonic()), check=False)
        except subprocess.TimeoutExpired as exc:
            raise self._fail(f"`flwr {' '.join(args)}` ({what}) ran past the time limit") from exc
        try:
            answer = json.loads(done.stdout)
        except json.JSONDecodeError:
            answer = None
        if done.returncode != 0 or not isinstance(answer, dict) or not answer.get("success"):
            log = self.workdir / f"{name}.log"
            log.write_text(done.stdout + done.stderr, encoding="utf-8")
            raise self._fail(f"`flwr {' '.join(args)}` ({what}) failed with status {done.returncode}", log=log)
        return answer

    def _online_nodes(self, deadline: float) -> int:
        # Flower's own listing (the SuperLink's Control API), not its log lines, whose wording may change.
        nodes = self._flwr(["supernode", "list", CONNECTION], deadline, "listing the SuperNodes").get("nodes", [])
        return sum(1 for node in nodes if node.get("status") == "online")

    # -- a run --

    def run(self, app_dir: str | Path, *, run_config: Mapping[str, Scalar] | None = None,
            timeout: float = 600.0) -> RunReport:
        """Run the Flower app in ``app_dir`` through the SuperNodes, with ``run_config`` overriding its config.

        Returns when the run finished; raises :class:`~loopml.errors.FederatedError` when it failed
        (with the ServerApp's error and the last lines of the run's log) or ran past ``timeout``
        seconds (then every process is stopped).
        """
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ArgumentError(f"Argument timeout should be a number of seconds > 0, not {timeout!r}")
        app_dir = Path(app_dir).resolve()
        known = _app_config(app_dir)
        overrides = _check_config("run_config", run_config or {})
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ArgumentError(f"Argument run_config has keys that the app's config does not declare: {unknown}; "
                                f"Flower only overrides declared keys ({sorted(known)}): pass them in "
                                "write_app(..., config=...)")
        if not self.procs or self._closed:
            raise FederatedError("The deployment is not running; use it inside `with Deployment(...) as fed:`")
        self._runs += 1
        args = ["run", str(app_dir), CONNECTION, "--stream"]
        if overrides:
            config_file = self.workdir / f"run-config-{self._runs}.toml"
            config_file.write_text(_toml_table(overrides), encoding="utf-8")
            args += ["--run-config", str(config_file)]
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        proc = self._start(f"run-{self._runs}", [self._tool("flwr"), *args])
        seen = 0
        try:
            while proc.exited() is None:
                seen = self._relay(proc.log, seen)
                self._check_alive()
                if time.monotonic() > deadline:
                    self._say(f"the run passed its time limit of {timeout:g} s; stopping the deployment")
                    error = self._fail(f"the run did not finish within its time limit ({timeout:g} s)", proc)
                    self.close()
                    raise error
                time.sleep(0.1)
        finally:
            self._relay(proc.log, seen)
        run_s = time.monotonic() - t0
        if proc.exited() != 0:
            raise self._fail(f"`flwr run` exited with status {proc.exited()}", proc)
        run_id, status, details = self._run_status(deadline + 30.0)
        if status != "finished:completed":
            raise self._fail(f"run {run_id} ended as {status!r}: {details or 'no details'}", proc)
        self._say(f"run {run_id} finished in {run_s:.1f} s")
        return RunReport(run_id=run_id, status=status, run_s=run_s, log=proc.log)

    def _relay(self, log: Path, seen: int) -> int:
        if self._log is None:
            return seen
        try:
            with log.open("rb") as f:
                f.seek(seen)
                data = f.read()
        except OSError:
            return seen
        end = data.rfind(b"\n") + 1  # whole lines only; the rest comes on the next call
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            self._say(_ANSI.sub("", line))
        return seen + end

    def _run_status(self, deadline: float) -> tuple[str, str, str]:
        # `flwr run --stream` exits 0 even when the ServerApp raised: the run's status says how it ended.
        runs = self._flwr(["ls", CONNECTION], deadline, "reading the run's status").get("runs", [])
        new = [r for r in runs if str(r.get("run-id")) not in self._run_ids]
        if len(new) != 1:
            raise FederatedError(f"The deployment engine failed: expected one new run on the SuperLink, found {len(new)}")
        run = new[0]
        self._run_ids.add(str(run.get("run-id")))
        return str(run.get("run-id")), str(run.get("status")), str(run.get("status-details") or "")

    # -- teardown --

    def close(self) -> None:
        """Stop every process this deployment started and their children: SIGTERM, then SIGKILL after ``grace``."""
        if self._closed:
            return
        self._closed = True
        roots = [p.pid for p in self.procs if p.exited() is None]
        table = _process_table()
        pids = _descendants(roots, table) + [p.pid for p in self.procs if p.pid not in roots]
        groups = {table[pid][1] for pid in pids if pid in table} | set(roots)
        self._signal(groups, pids, signal.SIGTERM)
        end = time.monotonic() + self.grace
        while time.monotonic() < end and self._running(pids):
            time.sleep(0.05)
        left = self._running(pids)
        if left:
            self._signal(groups, left, signal.SIGKILL)
            end = time.monotonic() + 5.0
            while time.monotonic() < end and self._running(left):
                time.sleep(0.05)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=1.0)  # reap our own children, so that none stays a zombie
            except subprocess.TimeoutExpired:
                pass
        self.stopped_pids = tuple(sorted(set(pids)))

    def _running(self, pids: Sequence[int]) -> list[int]:
        for proc in self.procs:
            proc.exited()  # reap those that ended
        table = _process_table()
        return [pid for pid in pids if alive(pid, table)]

    @staticmethod
    def _signal(groups: set[int], pids: Sequence[int], sig: signal.Signals) -> None:
        own = os.getpgrp()
        for group in groups:
            if group != own and group > 1:
                try:
                    os.killpg(group, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    @property
    def logs(self) -> dict[str, Path]:
        """Each process's log file, by name (``superlink``, ``supernode-0``, ``run-1``, ...)."""
        return {p.name: p.log for p in self.procs}


def run_deployment(app_dir: str | Path, *, node_configs: Sequence[Mapping[str, Scalar]],
                   run_config: Mapping[str, Scalar] | None = None, timeout: float, workdir: str | Path,
                   env: Mapping[str, str] | None = None, log: Callable[[str], None] | None = None) -> DeploymentReport:
    """Start a SuperLink and one SuperNode per node config on 127.0.0.1, run the app once, stop everything.

    ``timeout`` bounds the whole: starting, the run, and nothing is left running after it (or
    after an error or Ctrl-C). Raises :class:`~loopml.errors.FederatedError` naming what failed,
    with the last lines of its log. Example::

        report = run_deployment(app_dir, node_configs=[{"partition-id": 0}, {"partition-id": 1}],
                                timeout=300, workdir=tmp / "deployment")
    """
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
        raise ArgumentError(f"Argument timeout should be a number of seconds > 0, not {timeout!r}")
    t0 = time.monotonic()
    fed = Deployment(node_configs=node_configs, workdir=workdir, timeout=timeout, env=env, log=log)
    _app_config(Path(app_dir))  # a bad folder fails before any process starts
    with fed:
        left = timeout - (time.monotonic() - t0)
        if left <= 0:
            raise FederatedError(f"The deployment engine failed: starting took the whole time limit ({timeout:g} s)")
        result = fed.run(app_dir, run_config=run_config, timeout=left)
    return DeploymentReport(superlink_ready_s=fed.superlink_ready_s, nodes_connected_s=fed.nodes_connected_s,
                            run_s=result.run_s, total_s=time.monotonic() - t0, run_id=result.run_id,
                            status=result.status, port=fed.port, node_ports=tuple(fed.node_ports),
                            workdir=fed.workdir, logs=fed.logs, pids=fed.stopped_pids)
