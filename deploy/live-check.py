#!/usr/bin/env python3
"""End-to-end check of deploy/nginx.conf and the compose settings with real processes.

Run by `deploy/validate.sh --live path/to/parley-node` (needs nginx, no
Docker). It starts three parley-node processes on loopback as one cluster
(the embedded store, shared: the stand-in for ScyllaDB), with the PARLEY_*
settings of the compose file's parley1 service, and nginx with a copy of
deploy/nginx.conf in which only the upstream addresses and the listen port
are replaced by the loopback ones. Then, through nginx:

- /nginx-health, /health, the web client, /metrics refused;
- register and login; requests spread over the nodes (no stickiness);
- WebSocket upgrade, `hello`, `ping` -> `pong` (frames both ways);
- neither the access log nor the error log ever contains the token of /ws?token=...;
- nginx's login and refresh rate limits answer 429 with the node's JSON error shape;
- nginx's own 400, 404, 413, 414 and 431 (its 494) answers have that JSON shape too;
- SIGTERM to one node: its sockets are closed with 1012 and new upgrades
  through nginx keep succeeding (nginx skips the draining/stopped node);
- every node stopped: nginx answers 503 `unavailable` in the JSON shape;

and directly: `parley-node --help` lists every flag the deploy files use,
and every series the Grafana dashboard queries is in each node's /metrics.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in deploy/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import validate as v  # noqa: E402  (the static checker's parsers)

FAILED = 0


def ok(msg: str) -> None:
    print(f"  ok    {msg}")


def fail(msg: str) -> None:
    global FAILED
    FAILED += 1
    print(f"  FAIL  {msg}")


def check(cond: bool, good: str, bad: str) -> bool:
    (ok if cond else fail)(good if cond else bad)
    return cond


def free_ports(n: int) -> list[int]:
    """Free ports below the ephemeral range (an outgoing connection of one
    node must not take the port another node is about to listen on)."""
    import random
    ports: list[int] = []
    while len(ports) < n:
        p = random.randint(20000, 29999)
        if p in ports:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
    return ports


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


def raw_http(port: int, request: bytes) -> tuple[int, str, str]:
    """Sends `request` as raw bytes and reads the answer: (status, head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(request)
        except OSError:
            pass  # answered and closed before reading all of it
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer_complete(answer):
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    head, _, body = answer.decode(errors="replace").partition("\r\n\r\n")
    parts = head.split(" ")
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, head, body


def answer_complete(answer: bytes) -> bool:
    """Whether `answer` holds its whole body (by Content-Length)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return m is None or len(body) >= int(m.group(1))


def json_error(body: str) -> str | None:
    """The code of a contract error body, None if `body` is not one."""
    try:
        err = json.loads(body)["error"]
        return err["code"] if isinstance(err.get("message"), str) else None
    except (ValueError, KeyError, TypeError):
        return None


class WS:
    """A minimal WebSocket client (text frames, client masking)."""

    def __init__(self, port: int, path: str, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        self.buf = b""

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> tuple[int, bytes]:
        b0, b1 = self._read(2)
        op, ln = b0 & 0x0F, b1 & 0x7F
        if ln == 126:
            ln = struct.unpack(">H", self._read(2))[0]
        elif ln == 127:
            ln = struct.unpack(">Q", self._read(8))[0]
        return op, self._read(ln)

    def recv_json(self) -> dict:
        while True:
            op, data = self.recv()
            if op == 1:
                return json.loads(data)
            if op == 8:
                raise ConnectionError(f"close {struct.unpack('>H', data[:2])[0] if len(data) >= 2 else None}")

    def send_json(self, obj: dict) -> None:
        data = json.dumps(obj).encode()
        mask = os.urandom(4)
        head = bytes([0x81])
        if len(data) < 126:
            head += bytes([0x80 | len(data)])
        else:
            head += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def kubernetes_env(root: Path) -> dict[str, str]:
    """The parley container's environment as Kubernetes would build it."""
    k = root / "deploy/k8s"
    objs = [d for f in sorted(k.glob("*.yaml")) if f.name != "kustomization.yaml" for d in v.load_yaml_docs(f)]
    secrets_ = {o["metadata"]["name"]: o.get("stringData") or {} for o in objs if o["kind"] == "Secret"}
    cms = {o["metadata"]["name"]: o.get("data") or {} for o in objs if o["kind"] == "ConfigMap"}
    sts = next(o for o in objs if o["kind"] == "StatefulSet")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for ef in c.get("envFrom") or []:
        env.update({kk: str(vv) for kk, vv in cms.get((ef.get("configMapRef") or {}).get("name"), {}).items()})
    fields = {"metadata.name": f"{sts['metadata']['name']}-0", "status.podIP": "127.0.0.1"}
    for e in c.get("env") or []:
        vf = e.get("valueFrom") or {}
        if "value" in e:
            val = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(e["value"]))
        elif "secretKeyRef" in vf:
            val = secrets_[vf["secretKeyRef"]["name"]][vf["secretKeyRef"]["key"]]
        else:
            val = fields[vf["fieldRef"]["fieldPath"]]
        env[e["name"]] = val
    return {kk: vv for kk, vv in env.items() if not kk.startswith("OTEL_EXPORTER_")}


def parse_check(binary: Path, data: Path, env: dict[str, str], args: list[str], port: int) -> str | None:
    """Starts the node with `env` and `args`; None once it answers /health, else why not."""
    data.mkdir(parents=True, exist_ok=True)
    full = {kk: vv for kk, vv in os.environ.items() if not kk.startswith(("PARLEY_", "OTEL_"))}
    full.update(env)
    log = data / "node.log"
    p = subprocess.Popen([str(binary), *args], env=full, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if p.poll() is not None:
                return f"exit {p.returncode}: {log.read_text()[-400:]}"
            try:
                if http("GET", f"http://127.0.0.1:{port}/health", timeout=1)[0] == 200:
                    return None
            except OSError:
                pass
            time.sleep(0.1)
        return "no /health answer in 10 s"
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--nginx", default="nginx")
    a = ap.parse_args()
    root = Path(a.root)
    binary = Path(a.bin).resolve()
    print(f"== live: 3 x {binary} behind deploy/nginx.conf")
    if not binary.is_file():
        fail(f"{binary} does not exist (cargo build -p parley-node)")
        return 1

    rep = v.Report(strict=False)
    with open(os.devnull, "w") as devnull:
        stdout, sys.stdout = sys.stdout, devnull
        try:
            truth = v.Truth(root, rep)
        finally:
            sys.stdout = stdout

    # 1. --help lists every flag and variable the deploy files use.
    help_text = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=20).stdout
    used_flags, used_env = set(), set()
    for f in [root / "deploy/docker-compose.yml", root / "deploy/Dockerfile", *sorted((root / "deploy/k8s").glob("*.yaml"))]:
        t = re.sub(r"\$\{[^}]*\}", "", f.read_text())  # ${VAR} are compose interpolation, not node settings
        used_flags |= set(re.findall(r'"--([a-z][a-z0-9-]+)"', t))
        used_env |= set(re.findall(r"\b(PARLEY_[A-Z0-9_]+)\b", t))
    used_flags &= set(truth.flags)  # strings like --config.file= belong to other programs
    missing = sorted(f for f in used_flags if f"--{f}" not in help_text)
    missing_env = sorted(e for e in used_env if e not in help_text)
    check(not missing and not missing_env,
          f"parley-node --help lists the {len(used_flags)} flags and {len(used_env)} variables the deploy files use",
          f"parley-node --help lacks {missing + missing_env} (binary older than node/src/config.rs?)")

    tmp = Path(tempfile.mkdtemp(prefix="parley-live-"))
    ports = free_ports(7)
    http_ports, cluster_ports, lb_port = ports[0:3], ports[3:6], ports[6]
    procs: dict[str, subprocess.Popen] = {}
    nginx = None
    try:
        # The compose file's parley1 environment, minus what only makes sense in containers.
        compose = v.load_yaml_docs(root / "deploy/docker-compose.yml")[0]
        envfile = v.read_env_file(root / "deploy/.env.example")
        quiet = v.Report(strict=False)
        env_c = v.env_dict(v.interpolate(compose["services"]["parley1"].get("environment"), envfile, "", quiet, ""))
        # Flags below override the container-specific settings (addresses,
        # storage); every other value is parsed by the real binary.
        base_env = {k: val for k, val in env_c.items() if not k.startswith("OTEL_EXPORTER_")}
        ok(f"nodes get the compose environment of parley1: {sorted(base_env)}")

        # The Kubernetes environment (ConfigMap + StatefulSet) must parse too.
        k8s_env = kubernetes_env(root)
        k8s_ports = free_ports(2)
        ok_parse = parse_check(binary, tmp / "k8s", k8s_env,
                               ["--storage", "embedded", "--listen", f"127.0.0.1:{k8s_ports[0]}",
                                "--cluster-listen", f"127.0.0.1:{k8s_ports[1]}", "--data-dir", str(tmp / "k8s")],
                               k8s_ports[0])
        check(ok_parse is None, f"the StatefulSet's environment ({len(k8s_env)} variables) is accepted by parley-node",
              f"parley-node refuses the StatefulSet's environment: {ok_parse}")
        seeds = ",".join(f"127.0.0.1:{p}" for p in cluster_ports)
        for i in range(3):
            env = {k: val for k, val in os.environ.items() if not k.startswith(("PARLEY_", "OTEL_"))}
            env.update(base_env)
            # Cheap password hashing (the check logs in many times), per-user login limit off.
            env.update({"PARLEY_ARGON2_MEMORY_KIB": "64", "PARLEY_ARGON2_ITERATIONS": "1",
                        "PARLEY_LOGIN_RATE_PER_USER": "0", "PARLEY_CLUSTER_JOIN_GRACE_MS": "3000"})
            name = f"live{i + 1}"
            log = open(tmp / f"{name}.log", "w")
            procs[name] = subprocess.Popen(
                [str(binary), "--storage", "embedded", "--listen", f"127.0.0.1:{http_ports[i]}",
                 "--data-dir", str(tmp / "data"),
                 "--node-name", name, "--cluster-listen", f"127.0.0.1:{cluster_ports[i]}", "--seeds", seeds],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        joined = False
        while time.time() < deadline and not joined:
            time.sleep(0.3)
            try:
                joined = all(json.loads(http("GET", f"http://127.0.0.1:{p}/ready", timeout=2)[2]).get("members") == 3
                             for p in http_ports)
            except (OSError, ValueError):
                joined = False
            for name, p in procs.items():
                if p.poll() is not None:
                    fail(f"{name} exited with {p.returncode}: {(tmp / f'{name}.log').read_text()[-500:]}")
                    return 1
        if not check(joined, "3 nodes ready and joined (members 3)", "the nodes did not form a 3-node cluster in 60 s"):
            return 1

        # Every dashboard series exists in each node's real /metrics.
        dash = json.loads((root / "deploy/grafana/dashboards/parley.json").read_text())
        exprs = [t.get("expr", "") for p in dash["panels"] for t in p.get("targets", [])]
        wanted = set()
        for e in exprs:
            wanted |= {n for n in v.promql_metrics(e)[0] if n not in v.PROM_BUILTIN_SERIES}
        for i, p in enumerate(http_ports):
            text = http("GET", f"http://127.0.0.1:{p}/metrics")[2]
            have = set(re.findall(r"^([a-z_:][a-z0-9_:]*)\{", text, re.M))
            miss = sorted(wanted - have)
            check(not miss, f"live{i + 1} /metrics has all {len(wanted)} dashboard series",
                  f"live{i + 1} /metrics lacks dashboard series {miss}")

        # nginx with the committed config, only addresses replaced.
        conf = (root / "deploy/nginx.conf").read_text()
        ups = re.findall(r"server\s+(10\.213\.0\.\d+:\d+)", conf)
        check(len(ups) == 3, f"nginx.conf upstreams {ups}", f"expected 3 upstream servers, found {ups}")
        for up, p in zip(ups, http_ports):
            conf = conf.replace(f"server {up}", f"server 127.0.0.1:{p}")
        conf, n = re.subn(r"^(\s*)listen\s+8080([\s;])", rf"\1listen 127.0.0.1:{lb_port}\2", conf, flags=re.M)
        check(n == 1, "nginx listen port replaced", "could not find 'listen 8080' in nginx.conf")
        conf = conf.replace("access_log /dev/stdout parley;", f"access_log {tmp}/access.log parley;")
        (tmp / "nginx").mkdir()
        (tmp / "nginx/nginx.conf").write_text(conf)
        nginx = subprocess.Popen([a.nginx, "-p", str(tmp / "nginx"), "-e", str(tmp / "nginx/error.log"),
                                  "-c", str(tmp / "nginx/nginx.conf"),
                                  "-g", f"pid {tmp}/nginx/nginx.pid; daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=open(tmp / "nginx/stderr.log", "w"))
        lb = f"http://127.0.0.1:{lb_port}"
        for _ in range(50):
            try:
                if http("GET", lb + "/nginx-health", timeout=1)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        st, _, body = http("GET", lb + "/nginx-health")
        if not check(st == 200, "nginx up: /nginx-health 200", f"nginx not answering: {st} {(tmp / 'nginx/stderr.log').read_text()[-300:]}"):
            return 1
        st, _, body = http("GET", lb + "/health")
        check(st == 200 and json.loads(body).get("status") == "ok", "/health through nginx: 200 ok", f"/health: {st} {body}")
        st, _, body = http("GET", lb + "/")
        check(st == 200 and "<html" in body.lower(), "web client through nginx", f"GET /: {st}")
        st, _, body = http("GET", lb + "/metrics")
        check(st == 404 and json.loads(body)["error"]["code"] == "not_found", "/metrics refused at the balancer (404 JSON)",
              f"/metrics through nginx: {st} {body[:80]}")

        user, pw = "live_" + secrets.token_hex(4), "correct horse battery"
        st, _, body = http("POST", lb + "/api/v1/auth/register", {"username": user, "password": pw})
        check(st == 201, "register through nginx: 201", f"register: {st} {body}")
        st, _, body = http("POST", lb + "/api/v1/auth/login", {"username": user, "password": pw})
        token = json.loads(body).get("access_token", "") if st == 200 else ""
        if not check(bool(token), "login through nginx: access token", f"login: {st} {body}"):
            return 1
        seen = set()
        for _ in range(9):
            st, _, body = http("GET", lb + "/api/v1/cluster")
            if st == 200:
                seen.add(json.loads(body)["node"])
        check(len(seen) == 3, f"round robin, no stickiness: requests answered by {sorted(seen)}",
              f"requests through nginx reached only {sorted(seen)}")

        # WebSocket through nginx.
        socks = []
        hello_nodes = set()
        for _ in range(6):
            w = WS(lb_port, f"/ws?token={token}")
            if w.status != 101:
                fail(f"WebSocket upgrade through nginx: HTTP {w.status}")
                continue
            hello = w.recv_json()
            hello_nodes.add(hello.get("node"))
            socks.append((hello.get("node"), w))
        check(len(socks) == 6, "6 WebSocket upgrades through nginx: 101 + hello",
              "WebSocket upgrades through nginx failed")
        check(len(hello_nodes) >= 2, f"sockets spread over {sorted(hello_nodes)}", f"all sockets on {hello_nodes}")
        if socks:
            w = socks[0][1]
            w.send_json({"type": "ping", "ref": "live-1"})
            pong = w.recv_json()
            check(pong.get("type") == "pong" and pong.get("ref") == "live-1", "ping -> pong through nginx (frames both ways)",
                  f"expected pong, got {pong}")

        # Rate limit at nginx (the nodes' per-IP limits are off in compose).
        codes, limited = [], None
        for _ in range(40):
            st, hdrs, body = http("POST", lb + "/api/v1/auth/login", {"username": user, "password": "wrong password"})
            codes.append(st)
            if st == 429:
                limited = (hdrs, body)
                break
        if check(limited is not None, f"nginx login limit: 429 after {len(codes)} rapid attempts",
                 f"no 429 from nginx in 40 rapid logins ({sorted(set(codes))})"):
            hdrs, body = limited
            check(json.loads(body)["error"]["code"] == "rate_limited" and "Retry-After" in hdrs,
                  "429 has the node's JSON error shape and Retry-After", f"429 answer: {hdrs} {body}")

        # Token refresh is limited at nginx too (the nodes' limit is off in compose):
        # bogus tokens get the node's 401 until nginx answers 429.
        codes, limited = [], None
        for i in range(60):
            st, hdrs, body = http("POST", lb + "/api/v1/auth/refresh", {"refresh_token": f"bogus-{i}"})
            codes.append(st)
            if st == 429:
                limited = (hdrs, body)
                break
        if check(limited is not None and set(codes[:-1]) == {401},
                 f"nginx refresh limit: 401s from the node, then 429 after {len(codes)} rapid attempts",
                 f"expected 401s then a 429 from nginx in 60 rapid refreshes, got {codes}"):
            hdrs, body = limited
            check(json.loads(body)["error"]["code"] == "rate_limited" and "Retry-After" in hdrs,
                  "the refresh 429 has the node's JSON error shape and Retry-After", f"429 answer: {hdrs} {body}")

        # nginx's own answers carry the contract's JSON error body too.
        for what, req, status, code in [
            ("a malformed request", b"GARBAGE\r\n\r\n", 400, "invalid_request"),
            ("a 9 KiB URI", b"GET /api/v1/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "too_large"),
            ("a 9 KiB header line", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
             431, "too_large"),
            ("a 2 MB body", b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 2000000\r\n\r\n", 413, "too_large"),
            ("the internal error URI from outside", b"GET /.nginx-error/400 HTTP/1.1\r\nHost: x\r\n\r\n",
             404, "not_found"),
        ]:
            st, hdrs, body = raw_http(lb_port, req)
            check(st == status and json_error(body) == code,
                  f"{what} through nginx: {status} {code} (JSON)", f"{what} through nginx: {st} {hdrs[:120]!r} {body[:120]!r}")

        # Drain: SIGTERM the node of one open socket.
        victim = socks[0][0] if socks else "live1"
        procs[victim].send_signal(signal.SIGTERM)
        t0 = time.time()
        # An upgrade that reaches the node before it has handled the signal
        # is served (and then closed with 1012): wait until it says it drains.
        victim_port = http_ports[int(victim.removeprefix("live")) - 1]
        while time.time() - t0 < 10:
            try:
                if http("GET", f"http://127.0.0.1:{victim_port}/ready", timeout=2)[0] != 200:
                    break
            except OSError:
                break  # no longer accepting: drained already
            time.sleep(0.02)
        victims = [w for n, w in socks if n == victim]
        upgrades, codes_after = 0, []
        for _ in range(10):
            w = WS(lb_port, f"/ws?token={token}")
            codes_after.append(w.status)
            if w.status == 101:
                h = w.recv_json()
                upgrades += h.get("node") != victim
            w.close()
        check(upgrades == 10, f"during the drain of {victim}: 10/10 new upgrades through nginx went to other nodes",
              f"during the drain of {victim}: statuses {codes_after}, {upgrades} on other nodes")
        closes = []
        for w in victims:
            try:
                w.sock.settimeout(15)
                while True:
                    w.recv_json()
            except ConnectionError as e:
                closes.append(str(e))
            except OSError as e:
                closes.append(f"error {e}")
        check(bool(victims) and all(c == "close 1012" for c in closes),
              f"{victim}'s sockets through nginx closed with 1012 ({len(closes)})",
              f"{victim}'s sockets ended with {closes}")
        procs[victim].wait(timeout=30)
        check(procs[victim].returncode == 0, f"{victim} drained and exited 0 in {time.time() - t0:.1f}s",
              f"{victim} exited with {procs[victim].returncode}")
        for n, w in socks:
            w.close()

        # No node left: nginx's own 503, with the JSON error body.
        for n, p in procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(timeout=30)
        st, hdrs, body = http("GET", lb + "/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
        check(st == 503 and json_error(body) == "unavailable" and "Retry-After" in hdrs,
              "every node stopped: nginx answers 503 unavailable (JSON, Retry-After)",
              f"every node stopped: {st} {hdrs} {body[:120]!r}")
        # An upgrade no node can take: nginx logs the failure (quoting the
        # request line with its token unless /ws logs only critical errors).
        w = WS(lb_port, f"/ws?token={token}")
        check(w.status == 503, "every node stopped: a WebSocket upgrade through nginx gets 503",
              f"every node stopped: upgrade answered {w.status}")
        w.close()

        log = (tmp / "access.log").read_text()
        retried = [ln for ln in log.splitlines() if "/ws" in ln and re.search(r"upstream_status=\S*,", ln)]
        ok(f"nginx retried {len(retried)} upgrade(s) on another node (draining node answered 503 or refused)")
        check("/ws" in log and token not in log and "token=" not in log,
              "access log has /ws requests but no token", "the access log contains a token or no /ws line")
        errors = (tmp / "nginx/stderr.log").read_text()
        check("upstream" in errors and token not in errors and "token=" not in errors,
              "error log has upstream errors but no token",
              "the error log (nginx's stderr) contains a token, or no upstream error at all")
    finally:
        if nginx:
            nginx.terminate()
            nginx.wait(timeout=10)
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if FAILED:
            print(f"  logs kept in {tmp}")
        else:
            subprocess.run(["rm", "-rf", str(tmp)])
    print(f"live: {'all passed' if not FAILED else f'{FAILED} failure(s)'}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
