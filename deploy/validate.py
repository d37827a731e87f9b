#!/usr/bin/env python3
"""Static checks of the deployment files against the code.

Run through deploy/validate.sh (which also runs `nginx -t`, `bash -n` and,
when present, `promtool`). Everything here reads files only: no Docker, no
network. The truth it checks against is taken from the code each time:

- flags and PARLEY_* variables: the clap attributes in node/src/config.rs
  (`#[arg(long, env = "PARLEY_...")]` and the field names), with the field
  types (addresses, numbers, enums) to check values;
- metric names: the string literals of node/src/metrics.rs and of the
  metrics modules it renders (parley_<crate>::metrics);
- routes: node/src/api/mod.rs;
- packages, binaries and crate directories: the workspace Cargo.toml files.

Exit status 0 when every check passed, 1 otherwise. Problems in files owned
by other work in progress (LENIENT below) are warnings unless --strict.
"""

from __future__ import annotations

import argparse
import fnmatch
import ipaddress
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover
    print("FAIL python3 module yaml (PyYAML) is missing: apt-get install python3-yaml or pip install pyyaml")
    sys.exit(1)

# Compose files written by other work (the ScyllaDB backend) whose flags are
# documented in docs/operations.md as "wired into the node separately":
# their problems are reported as warnings, not failures (unless --strict).
LENIENT: set = set()

# Standard OpenTelemetry SDK environment variables (the node honours the
# OTEL_* variables through the opentelemetry crates).
OTEL_VARS = {
    "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_LOG_LEVEL",
    "OTEL_PROPAGATORS", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT",
    "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
}
OTEL_PROTOCOLS = {"grpc", "http/protobuf", "http/json"}
# Other variables a Parley container may carry.
OTHER_VARS = {"RUST_LOG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"}

# Ports the third-party images listen on by default (image repository -> ports).
KNOWN_IMAGE_PORTS = {
    "scylladb/scylla": {7000, 7001, 7199, 9042, 9142, 9160, 9180, 10000, 19042},
    "prom/prometheus": {9090},
    "grafana/grafana": {3000},
}

# Collector component types (opentelemetry-collector-contrib) this setup may use.
OTEL_COMPONENTS = {
    "receivers": {"otlp", "prometheus", "hostmetrics", "jaeger", "zipkin", "filelog"},
    "processors": {"batch", "memory_limiter", "resource", "attributes", "resourcedetection",
                   "filter", "transform", "tail_sampling", "probabilistic_sampler"},
    "exporters": {"debug", "prometheus", "prometheusremotewrite", "otlp", "otlphttp", "file",
                  "nop", "loadbalancing"},
    "extensions": {"health_check", "pprof", "zpages"},
    "connectors": {"spanmetrics", "count", "forward"},
}

PROMQL_FUNCS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "day_of_month",
    "day_of_week", "delta", "deriv", "exp", "floor", "group", "histogram_quantile", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log10", "log2", "max", "max_over_time", "min", "min_over_time", "minute", "month",
    "predict_linear", "present_over_time", "quantile", "quantile_over_time", "rate", "resets",
    "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev", "stddev_over_time", "stdvar",
    "stdvar_over_time", "sum", "sum_over_time", "time", "timestamp", "topk", "vector", "year",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                   "or", "unless", "offset", "inf", "nan"}
# Series every Prometheus adds for each target.
PROM_BUILTIN_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROM_TARGET_LABELS = {"job", "instance"}

PARLEY_BOOL_VALUES = {"true", "false", "1", "0", "yes", "no", "on", "off"}


# --------------------------------------------------------------------------- report

class Report:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.failures = 0
        self.warnings = 0
        self.passed = 0
        self.section = ""

    def start(self, title: str) -> None:
        self.section = title
        print(f"== {title}")

    def ok(self, msg: str) -> None:
        self.passed += 1
        print(f"  ok    {msg}")

    def fail(self, msg: str) -> None:
        self.failures += 1
        print(f"  FAIL  {msg}")

    def warn(self, msg: str) -> None:
        self.warnings += 1
        print(f"  warn  {msg}")

    def problem(self, rel: str, msg: str) -> None:
        """A failure, or a warning in a LENIENT file (unless --strict)."""
        if rel in LENIENT and not self.strict:
            self.warn(f"{msg} [not fatal: {rel} is owned by other work; --strict makes it fatal]")
        else:
            self.fail(msg)

    def check(self, cond: bool, ok_msg: str, fail_msg: str, rel: str = "") -> bool:
        if cond:
            self.ok(ok_msg)
        elif rel:
            self.problem(rel, fail_msg)
        else:
            self.fail(fail_msg)
        return cond


# --------------------------------------------------------------------------- truth from the code

class Flag:
    def __init__(self, name: str, env: str | None, ftype: str) -> None:
        self.name = name          # without the leading dashes
        self.env = env
        self.ftype = ftype        # the Rust type, e.g. "SocketAddr", "Option<String>"

    @property
    def takes_value(self) -> bool:
        return self.ftype.strip() != "bool"


def balanced(text: str, start: int) -> int:
    """Index just after the parenthesis group that opens at text[start] == '('."""
    depth = 0
    i = start
    in_str = False
    while i < len(text):
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def rust_struct_body(text: str, name: str) -> str | None:
    m = re.search(r"\bstruct\s+" + re.escape(name) + r"\b[^{;]*\{", text)
    if not m:
        return None
    depth = 0
    for i in range(m.end() - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[m.end():i]
    return None


def parse_clap_fields(text: str, root: Path, seen: set[str]) -> tuple[dict[str, Flag], list[str]]:
    """Flags of every clap field in `text` (following #[command(flatten)])."""
    flags: dict[str, Flag] = {}
    notes: list[str] = []
    pos = 0
    attr_re = re.compile(r"#\[(arg|clap|command)\(")
    while True:
        m = attr_re.search(text, pos)
        if not m:
            break
        end = balanced(text, m.end() - 1)
        attr = text[m.end():end - 1]
        pos = end
        # The field the attribute belongs to (skipping doc comments and other attributes).
        fm = re.compile(r"(?:\s*(?:///[^\n]*|#\[[^\]]*\]))*\s*pub\s+(\w+)\s*:\s*([^,\n]+),").match(text, end + 1)
        if not fm:
            continue
        field, ftype = fm.group(1), fm.group(2).strip()
        if re.search(r"\bflatten\b", attr):
            tname = re.sub(r"^Option<(.*)>$", r"\1", ftype)
            if tname in seen:
                continue
            seen.add(tname)
            for src in sorted(root.glob("*/src/**/*.rs")):
                body = rust_struct_body(src.read_text(errors="replace"), tname)
                if body is not None:
                    sub, subnotes = parse_clap_fields(body, root, seen)
                    flags.update(sub)
                    notes += subnotes + [f"flattened {tname} from {src.relative_to(root)}"]
                    break
            else:
                notes.append(f"flattened struct {tname} not found")
            continue
        if not re.search(r"\blong\b", attr):
            continue
        lm = re.search(r'\blong\s*=\s*"([^"]+)"', attr)
        name = lm.group(1) if lm else field.replace("_", "-")
        em = re.search(r'\benv\s*=\s*"([A-Z0-9_]+)"', attr)
        flags[name] = Flag(name, em.group(1) if em else None, ftype)
    return flags, notes


def rust_enum_values(text: str) -> dict[str, set[str]]:
    """ValueEnum enums: name -> accepted values (clap's kebab-case of the variants)."""
    out = {}
    for m in re.finditer(r"derive\([^)]*ValueEnum[^)]*\)\]\s*pub\s+enum\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
        body = re.sub(r"///[^\n]*|#\[[^\]]*\]", "", m.group(2))
        variants = re.findall(r"^\s*([A-Z]\w*)\s*,?\s*$", body, re.M)
        out[m.group(1)] = {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in variants}
    return out


class Truth:
    def __init__(self, root: Path, rep: Report) -> None:
        self.root = root
        rep.start("truth taken from the code")
        cfg = root / "node/src/config.rs"
        text = cfg.read_text()
        self.flags, notes = parse_clap_fields(text, root, set())
        self.enums = rust_enum_values(text)
        self.env_to_flag = {f.env: f for f in self.flags.values() if f.env}
        for n in notes:
            rep.ok(n)
        rep.check(len(self.flags) > 10 and "listen" in self.flags and "cluster-listen" in self.flags,
                  f"node/src/config.rs: {len(self.flags)} flags, {len(self.env_to_flag)} PARLEY_* variables",
                  "node/src/config.rs: could not extract the flags (did the clap attributes change shape?)")
        raw_env = set(re.findall(r'env\s*=\s*"(PARLEY_[A-Z0-9_]+)"', text))
        missing = raw_env - set(self.env_to_flag)
        rep.check(not missing, "every env = \"PARLEY_*\" in config.rs belongs to a --flag",
                  f"env names in config.rs not tied to a flag by the parser: {sorted(missing)}")

        # Routes.
        api = (root / "node/src/api/mod.rs").read_text()
        self.routes = set(re.findall(r'\.route\(\s*"(/[^"]*)"', api))
        rep.check({"/health", "/ready", "/metrics", "/ws"} <= self.routes,
                  f"node/src/api/mod.rs: routes {sorted(r for r in self.routes if r.count('/') == 1 and '{' not in r)}",
                  f"node/src/api/mod.rs: expected /health, /ready, /metrics, /ws among {sorted(self.routes)}")

        # Workspace: members, packages, binaries.
        ws = tomllib.loads((root / "Cargo.toml").read_text())
        self.members = ws.get("workspace", {}).get("members", [])
        self.packages: dict[str, dict] = {}   # package name -> {"dir", "bins"}
        for mem in self.members:
            mt = root / mem / "Cargo.toml"
            if not mt.exists():
                rep.fail(f"workspace member {mem}/ has no Cargo.toml")
                continue
            t = tomllib.loads(mt.read_text())
            pname = t["package"]["name"]
            bins = [b["name"] for b in t.get("bin", [])]
            if not bins and (root / mem / "src/main.rs").exists():
                bins = [pname]
            self.packages[pname] = {"dir": mem, "bins": bins}
        rep.ok("workspace packages: " + ", ".join(
            f"{p} ({v['dir']}/, bins {v['bins']})" for p, v in self.packages.items()))

        # Metrics: node/src/metrics.rs and the metrics modules it renders.
        self.metrics: dict[str, str] = {}  # name -> "histogram" | "series"
        sources = [root / "node/src/metrics.rs"]
        node_metrics = sources[0].read_text()
        for crate in sorted(set(re.findall(r"\bparley_(\w+)::metrics\b", node_metrics))):
            pkg = self.packages.get("parley-" + crate.replace("_", "-"))
            if pkg:
                sources.append(root / pkg["dir"] / "src/metrics.rs")
        for src in sources:
            if not src.exists():
                rep.fail(f"{src.relative_to(root)} (rendered by node/src/metrics.rs) is missing")
                continue
            t = src.read_text().split("#[cfg(test)]")[0]
            hist = set(re.findall(r'\.render\(\s*[\w&.]+\s*,\s*"(parley_[a-z0-9_]+)"', t))
            for name in re.findall(r'"(parley_[a-z0-9_]+)"', t):
                self.metrics[name] = "histogram" if name in hist else "series"
        self.series = set()
        for name, kind in self.metrics.items():
            if kind == "histogram":
                self.series |= {name + "_bucket", name + "_sum", name + "_count"}
            else:
                self.series.add(name)
        rep.check(len(self.metrics) >= 5,
                  f"metrics from {', '.join(str(s.relative_to(root)) for s in sources)}: "
                  f"{len(self.metrics)} names ({sum(k == 'histogram' for k in self.metrics.values())} histograms)",
                  "could not extract metric names from node/src/metrics.rs")
        # Labels: every series has `node`; extra labels written as `name=\"` in the sources.
        self.labels = {"node", "le"} | PROM_TARGET_LABELS
        for src in sources:
            if src.exists():
                self.labels |= set(re.findall(r'\b([a-z_]+)=\\"', src.read_text()))


# --------------------------------------------------------------------------- helpers

def rel(root: Path, p: Path) -> str:
    return str(p.resolve().relative_to(root))


def load_yaml_docs(path: Path):
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def parse_hostport(value: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d+)", value.strip())
    if not m:
        return None
    return m.group(1), int(m.group(2))


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def check_flag_value(truth: Truth, flag: Flag, value: str, where: str, rep: Report, rel_: str) -> None:
    """Type-checks one value (skipped when it still contains a variable)."""
    if "$" in value:
        return
    t = re.sub(r"^Option<(.*)>$", r"\1", flag.ftype.strip())
    bad = None
    if t == "SocketAddr":
        hp = parse_hostport(value)
        if not hp or not is_ip(hp[0]):
            bad = "an ip:port address (a host name is not accepted)"
    elif t in {"u8", "u16", "u32", "u64", "usize"}:
        if not re.fullmatch(r"\d+", value):
            bad = "a non-negative integer"
    elif t == "bool":
        if value.lower() not in PARLEY_BOOL_VALUES:
            bad = "a boolean"
    elif t in truth.enums:
        if value not in truth.enums[t]:
            bad = f"one of {sorted(truth.enums[t])}"
    if bad:
        rep.problem(rel_, f"{where}: --{flag.name} = {value!r} is not {bad} ({flag.ftype})")


def check_args(truth: Truth, args: list[str], where: str, rep: Report, rel_: str) -> dict[str, str]:
    """Checks a parley-node argument list; returns {flag: value}."""
    out: dict[str, str] = {}
    i = 0
    bad = []
    while i < len(args):
        a = str(args[i])
        if a.startswith("--"):
            name, _, inline = a[2:].partition("=")
            flag = truth.flags.get(name)
            if flag is None:
                bad.append(a)
                i += 1
                continue
            if flag.takes_value and not inline:
                if i + 1 >= len(args) or str(args[i + 1]).startswith("--"):
                    rep.problem(rel_, f"{where}: --{name} needs a value")
                    i += 1
                    continue
                inline = str(args[i + 1])
                i += 1
            out[name] = inline if flag.takes_value else "true"
            if flag.takes_value:
                check_flag_value(truth, flag, inline, where, rep, rel_)
        elif a.startswith("-") and a not in {"-h", "-V"}:
            bad.append(a)
        else:
            rep.problem(rel_, f"{where}: stray argument {a!r} (parley-node takes no positional arguments)")
        i += 1
    if bad:
        rep.problem(rel_, f"{where}: unknown flag(s) {bad} (not in node/src/config.rs)")
    elif args:
        rep.ok(f"{where}: flags {['--' + k for k in out]} exist in node/src/config.rs")
    return out


def check_env(truth: Truth, env: dict[str, str], where: str, rep: Report, rel_: str,
              helpers: set[str] = frozenset()) -> None:
    unknown = []
    for k, v in env.items():
        if k.startswith("PARLEY_"):
            flag = truth.env_to_flag.get(k)
            if flag is None:
                unknown.append(k)
            elif v is not None:
                check_flag_value(truth, flag, str(v), f"{where} {k}", rep, rel_)
        elif k in OTEL_VARS or k in OTHER_VARS or k in helpers:
            if k.endswith("_PROTOCOL") and v is not None and "$" not in str(v) and str(v) not in OTEL_PROTOCOLS:
                rep.problem(rel_, f"{where}: {k}={v!r} is not one of {sorted(OTEL_PROTOCOLS)}")
        elif k.startswith("OTEL_"):
            unknown.append(k)
        else:
            unknown.append(k)
    if unknown:
        rep.problem(rel_, f"{where}: unknown environment variable(s) {unknown} "
                          "(not a PARLEY_* of node/src/config.rs, a standard OTEL_*, or RUST_LOG)")
    else:
        names = sorted(k for k in env if k.startswith("PARLEY_"))
        rep.ok(f"{where}: {len(names)} PARLEY_* variables exist in node/src/config.rs"
               + (f", plus {sorted(k for k in env if not k.startswith('PARLEY_'))}" if len(names) != len(env) else ""))


def cluster_listen_ok(value: str | None, where: str, rep: Report, rel_: str, expect_ip: str | None = None,
                      advertise: str | None = None) -> None:
    """The address a node announces to its peers (--cluster-advertise, else
    the IP of --cluster-listen) must be one its peers can reach it at."""
    if not value:
        return
    hp = parse_hostport(value)
    if hp is None:
        return
    announced = advertise or hp[0]
    what = f"--cluster-advertise {advertise}" if advertise else f"--cluster-listen {value}"
    if "$" in announced:
        rep.ok(f"{where}: cluster address ({what}) is filled in at run time")
        return
    if is_ip(announced) and ipaddress.ip_address(announced).is_unspecified:
        rep.problem(rel_, f"{where}: {what} is an unspecified address; the node announces this IP to its "
                          "peers (ractor_cluster connection string) and refuses to start with it. Listen on "
                          "the node's own IP, or give --cluster-advertise IP.")
        return
    if expect_ip and announced != expect_ip:
        rep.problem(rel_, f"{where}: {what} is not this container's address {expect_ip}")
        return
    rep.ok(f"{where}: cluster address ({what}) is a specific IP")


# --------------------------------------------------------------------------- compose

def interpolate(value, env: dict[str, str], where: str, rep: Report, rel_: str):
    """Compose-style ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, where, rep, rel_) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, where, rep, rel_) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3)
        have = name in env
        if op in (":-", "-"):
            return env[name] if have and (env[name] or op == "-") else (arg or "")
        if op in (":?", "?"):
            if not have:
                rep.problem(rel_, f"{where}: ${{{name}}} is required but not defined in .env.example")
            return env.get(name, "")
        if not have:
            rep.problem(rel_, f"{where}: ${{{name}}} has no default and is not defined in .env.example")
        return env.get(name, "")

    return re.sub(r"\$\$|\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)", sub, value)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, _, v = line.partition("=")
                env[k.strip()] = v.strip().strip('"').strip("'")
    return env


def env_dict(raw) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(k): (None if v is None else str(v)) for k, v in raw.items()}
    out = {}
    for item in raw:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def parse_port(spec) -> tuple[str | None, int | None, int] | None:
    """(host ip, host port, container port) of a compose port."""
    if isinstance(spec, dict):
        return spec.get("host_ip"), (int(spec["published"]) if spec.get("published") else None), int(spec["target"])
    s = str(spec).split("/")[0]
    parts = s.rsplit(":", 2) if s.count(":") <= 2 else None
    if parts is None:
        return None
    try:
        if len(parts) == 1:
            return None, None, int(parts[0])
        if len(parts) == 2:
            return None, int(parts[0]), int(parts[1])
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None


def image_repo(image: str) -> str:
    name = image.split("@")[0]
    if ":" in name.split("/")[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def mounts(svc: dict) -> list[tuple[str, str]]:
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v.get("target", ""))))
        else:
            parts = str(v).split(":")
            if len(parts) >= 2:
                out.append((parts[0], parts[1]))
            else:
                out.append(("", parts[0]))
    return out


class Dockerfile:
    """The few facts of deploy/Dockerfile the compose and Kubernetes checks need."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.instructions: list[tuple[str, str]] = []
        text = path.read_text()
        lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
        joined = re.sub(r"\\\n", " ", "\n".join(lines))
        for line in joined.splitlines():
            line = line.strip()
            if line:
                kw, _, rest = line.partition(" ")
                self.instructions.append((kw.upper(), rest.strip()))
        self.env: dict[str, str] = {}
        self.stages: list[tuple[str, str | None]] = []
        for kw, rest in self.instructions:
            if kw == "FROM":
                m = re.match(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
                self.stages.append((m.group(1), m.group(2)))
                self.env = {}  # ENV of the last stage only
            elif kw == "ENV":
                for tok in shlex.split(rest):
                    k, _, v = tok.partition("=")
                    self.env[k] = v
        self.has_healthcheck = any(kw == "HEALTHCHECK" for kw, _ in self.instructions)


def check_compose(root: Path, path: Path, truth: Truth, dockerfile: Dockerfile, rep: Report) -> None:
    r = rel(root, path)
    rep.start(f"compose: {r}")
    base = path.parent
    doc = load_yaml_docs(path)[0]
    env_file = read_env_file(base / ".env.example")
    if env_file:
        rep.ok(f"interpolation values from {rel(root, base / '.env.example')}: {sorted(env_file)}")
        for k in ("PARLEY_JWT_SECRET", "PARLEY_CLUSTER_SECRET"):
            if k in env_file:
                rep.check(len(env_file[k]) >= 16, f".env.example {k} is at least 16 characters",
                          f".env.example {k} is shorter than 16 characters (the node refuses it)")
    top_allowed = {"name", "services", "networks", "volumes", "secrets", "configs", "include", "version"}
    extra = [k for k in doc if k not in top_allowed and not str(k).startswith("x-")]
    rep.check(not extra, "top-level keys are compose keys", f"unknown top-level keys {extra}", r)
    services: dict = doc.get("services") or {}
    rep.check(bool(services), f"services: {list(services)}", "no services", r)
    networks = doc.get("networks") or {}
    volumes = doc.get("volumes") or {}
    subnets = {}
    for nname, ncfg in networks.items():
        for c in ((ncfg or {}).get("ipam") or {}).get("config") or []:
            if c.get("subnet"):
                subnets[nname] = ipaddress.ip_network(c["subnet"])
    svc_env = {}
    parley = {}        # service -> facts
    host_ports = {}
    used_ips = {}
    nginx_confs = []
    prom_confs = []
    otel_confs = {}    # service -> path
    grafana = []
    listening: dict[str, set[int]] = {}

    for name, svc in services.items():
        where = f"{r} {name}"
        svc = interpolate(svc, env_file, where, rep, r)
        image = svc.get("image", "")
        build = svc.get("build")
        if not image and not build:
            rep.problem(r, f"{where}: neither image nor build")
        if build:
            ctx = base / (build if isinstance(build, str) else build.get("context", "."))
            dfile = ctx / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
            rep.check(ctx.is_dir() and dfile.is_file(),
                      f"{where}: build context {rel(root, ctx) or '.'} and {rel(root, dfile)} exist",
                      f"{where}: build context {ctx} or dockerfile {dfile} missing", r)
        is_parley = bool(build and "deploy/Dockerfile" in str(build)) or image_repo(image) == "parley"
        if image and not is_parley:
            tag = image.split("/")[-1].partition(":")[2]
            rep.check(bool(tag) and tag != "latest", f"{where}: image {image} is pinned",
                      f"{where}: image {image} has no pinned tag", r)
        if is_parley and not build:
            rep.ok(f"{where}: uses the Parley image {image} (build it with deploy/Dockerfile first)")

        # environment, command
        env = env_dict(svc.get("environment"))
        svc_env[name] = env
        if is_parley:
            check_env(truth, env, where, rep, r)
            cmd = svc.get("command") or []
            if isinstance(cmd, str):
                cmd = shlex.split(cmd)
            args = check_args(truth, cmd, f"{where} command", rep, r)
            # Effective settings: flag, else env, else the image's ENV, else the default.
            eff = {}
            for fname, flag in truth.flags.items():
                if fname in args:
                    eff[fname] = args[fname]
                elif flag.env and env.get(flag.env) is not None:
                    eff[fname] = env[flag.env]
                elif flag.env and flag.env in dockerfile.env:
                    eff[fname] = dockerfile.env[flag.env]
            both = [f for f in args if truth.flags[f].env in env]
            if both:
                rep.warn(f"{where}: {['--' + f for f in both]} set both as flag and variable (the flag wins)")
            parley[name] = {"eff": eff, "svc": svc}
            lp = parse_hostport(eff.get("listen", "127.0.0.1:8080"))
            listening[name] = {lp[1]} if lp else set()
            if lp and lp[0] in ("127.0.0.1", "::1", "localhost"):
                rep.problem(r, f"{where}: listens on {lp[0]}: unreachable from other containers")
            cl = parse_hostport(eff.get("cluster-listen", "") or "")
            if cl:
                listening[name].add(cl[1])
        else:
            repo = image_repo(image)
            listening[name] = set(KNOWN_IMAGE_PORTS.get(repo, set()))
            for src, dst in mounts(svc):
                if dst == "/etc/nginx/nginx.conf":
                    nginx_confs.append((name, base / src))
                if dst.endswith("/prometheus.yml"):
                    prom_confs.append((name, base / src))
            if "opentelemetry-collector" in repo:
                cfg_arg = next((c.split("=", 1)[1] for c in (svc.get("command") or []) if str(c).startswith("--config=")), None)
                for src, dst in mounts(svc):
                    if dst == cfg_arg:
                        otel_confs[name] = base / src
                rep.check(name in otel_confs, f"{where}: --config={cfg_arg} is a mounted file",
                          f"{where}: the collector's --config file is not mounted", r)
            if repo == "grafana/grafana":
                grafana.append((name, svc))

        # healthcheck
        hc = svc.get("healthcheck")
        if hc and is_parley:
            test = " ".join(map(str, hc.get("test", [])))
            m = re.search(r"https?://[^/\s:]+:(\d+)(/[^\s\"']*)", test)
            lp = parse_hostport(parley[name]["eff"].get("listen", "127.0.0.1:8080"))
            rep.check(bool(m) and m.group(2) in truth.routes and lp and int(m.group(1)) == lp[1],
                      f"{where}: healthcheck {m.group(2) if m else '?'} is a route on the listen port",
                      f"{where}: healthcheck {test!r} is not a route on the listen port", r)

        # volumes
        for src, dst in mounts(svc):
            if src.startswith((".", "/")):
                p = (base / src)
                rep.check(p.exists(), f"{where}: bind mount {src} exists",
                          f"{where}: bind mount source {src} does not exist", r)
            elif src:
                rep.check(src in volumes, f"{where}: volume {src} is declared",
                          f"{where}: volume {src} is not declared under volumes:", r)

        # networks and fixed addresses
        nets = svc.get("networks") or {}
        for nname, ncfg in (nets.items() if isinstance(nets, dict) else [(n, None) for n in nets]):
            if nname not in networks:
                rep.problem(r, f"{where}: network {nname} is not declared")
                continue
            ip = (ncfg or {}).get("ipv4_address")
            if ip:
                if nname in subnets and ipaddress.ip_address(ip) not in subnets[nname]:
                    rep.problem(r, f"{where}: {ip} is outside {subnets[nname]}")
                elif ip in used_ips:
                    rep.problem(r, f"{where}: {ip} is also used by {used_ips[ip]}")
                else:
                    used_ips[ip] = name
                    rep.ok(f"{where}: fixed address {ip} on {nname}")
        svc["_ips"] = [((c or {}).get("ipv4_address")) for c in (nets.values() if isinstance(nets, dict) else [])]
        services[name] = svc

    # Ports of configured third-party services.
    for name, conf in nginx_confs:
        if conf.exists():
            listening[name] = set(NginxConf(conf).listen_ports)
    for name, conf in otel_confs.items():
        if conf.exists():
            listening[name] = set(OtelConf(load_yaml_docs(conf)[0]).ports)

    for name, svc in services.items():
        where = f"{r} {name}"
        for spec in svc.get("ports") or []:
            p = parse_port(spec)
            if p is None:
                rep.problem(r, f"{where}: cannot parse port {spec!r}")
                continue
            hip, hport, cport = p
            if listening.get(name):
                rep.check(cport in listening[name], f"{where}: port {spec} -> container port {cport} is listened on",
                          f"{where}: port {spec}: the container listens on {sorted(listening[name])}, not {cport}", r)
            if hport is not None:
                key = (hip or "0.0.0.0", hport)
                clash = [k for k in host_ports if k[1] == hport and (k[0] == key[0] or "0.0.0.0" in (k[0], key[0]))]
                if clash:
                    rep.problem(r, f"{where}: host port {hport} also published by {host_ports[clash[0]]}")
                host_ports[key] = name
        dep = svc.get("depends_on") or {}
        for target, cond in (dep.items() if isinstance(dep, dict) else [(d, None) for d in dep]):
            if target not in services:
                rep.problem(r, f"{where}: depends_on {target}, which is not a service")
                continue
            c = (cond or {}).get("condition", "service_started")
            if c == "service_healthy":
                t = services[target]
                has = bool(t.get("healthcheck")) or (target in parley and dockerfile.has_healthcheck)
                rep.check(has, f"{where}: depends_on {target} (healthy): {target} has a healthcheck",
                          f"{where}: depends_on {target} service_healthy but {target} has no healthcheck", r)
            else:
                rep.ok(f"{where}: depends_on {target} ({c})")

    # The cluster: names, addresses, seeds, secrets, storage, telemetry.
    if parley:
        rep.ok(f"Parley nodes: {sorted(parley)}")
        names = [p["eff"].get("node-name") for p in parley.values()]
        if len(parley) > 1:
            rep.check(all(names) and len(set(names)) == len(names), f"node names {names} are set and unique",
                      f"node names must be set and unique: {names}", r)
        listens = {}
        for name, p in parley.items():
            ips = [ip for ip in services[name].get("_ips", []) if ip]
            cl = p["eff"].get("cluster-listen")
            cluster_listen_ok(cl, f"{r} {name}", rep, r, ips[0] if ips else None,
                              p["eff"].get("cluster-advertise"))
            hp = parse_hostport(cl or "")
            if hp:
                # Peers know a node by the address it announces.
                listens[f"{p['eff'].get('cluster-advertise') or hp[0]}:{hp[1]}"] = name
                secret = p["eff"].get("cluster-secret")
                rep.check(bool(secret) or p["eff"].get("cluster-insecure-dev") in PARLEY_BOOL_VALUES - {"false", "0", "no", "off"},
                          f"{r} {name}: cluster secret set", f"{r} {name}: --cluster-listen without a cluster secret", r)
        for name, p in parley.items():
            seeds = [s for s in (p["eff"].get("seeds") or "").split(",") if s]
            for s in seeds:
                hp = parse_hostport(s)
                if hp is None:
                    rep.problem(r, f"{r} {name}: seed {s!r} is not host:port")
                elif s in listens:
                    continue
                elif not is_ip(hp[0]):
                    # The join loop resolves names every round (node/src/cluster.rs).
                    if hp[0] not in parley:
                        rep.problem(r, f"{r} {name}: seed {s} names no Parley service ({sorted(parley)})")
                else:
                    rep.problem(r, f"{r} {name}: seed {s} is no node's cluster address ({sorted(listens)})")
            if seeds and all(s in listens or parse_hostport(s)[0] in parley for s in seeds):
                rep.ok(f"{r} {name}: seeds {seeds} are the nodes' cluster addresses")
        for key in ("jwt-secret", "cluster-secret", "storage"):
            vals = {p["eff"].get(key) for p in parley.values()}
            if len(parley) > 1:
                rep.check(len(vals) == 1, f"every node has the same {key}",
                          f"nodes disagree on {key}", r)
        for name, p in parley.items():
            for s in [x for x in (p["eff"].get("scylla-nodes") or "").split(",") if x]:
                hp = parse_hostport(s) or (s, 9042)
                rep.check(hp[0] in services and hp[1] in listening.get(hp[0], set()),
                          f"{r} {name}: ScyllaDB contact point {s} is a service port",
                          f"{r} {name}: ScyllaDB contact point {s} is not a service listening on {hp[1]}", r)
            ep = svc_env[name].get("OTEL_EXPORTER_OTLP_ENDPOINT")
            if ep:
                m = re.match(r"https?://([^:/]+):(\d+)", ep)
                rep.check(bool(m) and m.group(1) in services and int(m.group(2)) in listening.get(m.group(1), set()),
                          f"{r} {name}: OTLP endpoint {ep} is a collector receiver",
                          f"{r} {name}: OTLP endpoint {ep} is not a service port listened on", r)

    # nginx in front: upstream = the nodes' addresses.
    for name, conf in nginx_confs:
        rep.check(conf.exists(), f"{r} {name}: nginx config {rel(root, conf)} mounted",
                  f"{r} {name}: nginx config {conf} missing", r)
        if not conf.exists():
            continue
        ng = NginxConf(conf)
        want = set()
        for pname, p in parley.items():
            lp = parse_hostport(p["eff"].get("listen", "127.0.0.1:8080"))
            for ip in services[pname].get("_ips", []):
                if ip and lp:
                    want.add(f"{ip}:{lp[1]}")
        for uname, servers in ng.upstreams.items():
            rep.check(set(servers) == want,
                      f"{r} {name}: nginx upstream {uname} = the nodes {sorted(want)}",
                      f"{r} {name}: nginx upstream {uname} {sorted(servers)} != the nodes' addresses {sorted(want)}", r)

    # Prometheus: the parley job scrapes every node.
    for name, conf in prom_confs:
        if not conf.exists():
            rep.problem(r, f"{r} {name}: {conf} missing")
            continue
        pc = load_yaml_docs(conf)[0]
        want = set()
        for pname, p in parley.items():
            lp = parse_hostport(p["eff"].get("listen", "127.0.0.1:8080"))
            want.add(f"{pname}:{lp[1] if lp else 8080}")
        for job in pc.get("scrape_configs", []):
            targets = [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
            if job.get("metrics_path", "/metrics") != "/metrics" and job.get("job_name") == "parley":
                rep.problem(r, f"{rel(root, conf)}: job parley metrics_path {job.get('metrics_path')} is not /metrics")
            for t in targets:
                hp = parse_hostport(t)
                if not hp:
                    rep.problem(r, f"{rel(root, conf)}: target {t!r} is not host:port")
                elif hp[0] == "localhost":
                    rep.ok(f"{rel(root, conf)}: {job['job_name']} scrapes {t} (itself)")
                else:
                    rep.check(hp[0] in services and hp[1] in listening.get(hp[0], set()),
                              f"{rel(root, conf)}: {job['job_name']} target {t} is a service port",
                              f"{rel(root, conf)}: {job['job_name']} target {t} is not a service port listened on", r)
            if job.get("job_name") == "parley":
                rep.check(set(targets) == want, f"{rel(root, conf)}: job parley scrapes every node {sorted(want)}",
                          f"{rel(root, conf)}: job parley targets {sorted(targets)} != nodes {sorted(want)}", r)

    # Grafana: provisioning and dashboards mounted where the provider looks.
    for name, svc in grafana:
        m = dict((dst, base / src) for src, dst in mounts(svc))
        prov = m.get("/etc/grafana/provisioning")
        rep.check(bool(prov) and prov.is_dir(), f"{r} {name}: provisioning directory mounted",
                  f"{r} {name}: no provisioning directory mounted at /etc/grafana/provisioning", r)
        if not prov or not prov.is_dir():
            continue
        for f in sorted((prov / "dashboards").glob("*.y*ml")):
            for prov_ in (load_yaml_docs(f)[0] or {}).get("providers", []):
                path_in = (prov_.get("options") or {}).get("path")
                host = m.get(path_in)
                rep.check(bool(host) and host.is_dir() and any(host.glob("*.json")),
                          f"{r} {name}: dashboard provider path {path_in} is the mounted {rel(root, host) if host else '?'}",
                          f"{r} {name}: dashboard provider path {path_in} is not a mounted directory with dashboards", r)
        for f in sorted((prov / "datasources").glob("*.y*ml")):
            for ds in (load_yaml_docs(f)[0] or {}).get("datasources", []):
                mm = re.match(r"https?://([^:/]+):(\d+)", ds.get("url", ""))
                rep.check(bool(mm) and mm.group(1) in services and int(mm.group(2)) in listening.get(mm.group(1), set()),
                          f"{r} {name}: datasource {ds.get('name')} -> {ds.get('url')} is a service port",
                          f"{r} {name}: datasource url {ds.get('url')} is not a service port", r)
        env = env_dict(svc.get("environment"))
        home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        if home:
            d, _, fname = home.rpartition("/")
            rep.check(d in m and (m[d] / fname).is_file(), f"{r} {name}: home dashboard {home} is mounted",
                      f"{r} {name}: home dashboard {home} is not a mounted file", r)


# --------------------------------------------------------------------------- nginx

def duration_secs(v: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", v)
    if not m:
        return 0
    n = int(m.group(1))
    return n * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class NginxConf:
    def __init__(self, path: Path) -> None:
        text = re.sub(r"#[^\n]*", "", path.read_text())
        self.text = text
        self.upstreams = {}
        for m in re.finditer(r"upstream\s+(\S+)\s*\{([^}]*)\}", text):
            self.upstreams[m.group(1)] = re.findall(r"^\s*server\s+(\S+?)(?:\s[^;]*)?;", m.group(2), re.M)
            self.upstream_bodies = getattr(self, "upstream_bodies", {})
            self.upstream_bodies[m.group(1)] = m.group(2)
        self.listen_ports = [int(p) for p in re.findall(r"^\s*listen\s+(?:[\d.]+:|\[[^\]]*\]:)?(\d+)", text, re.M)]
        self.locations = {}
        for m in re.finditer(r"location\s+(=\s*|~\*?\s*|\^~\s*)?(\S+)\s*\{", text):
            start = m.end()
            depth = 1
            i = start
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            self.locations[m.group(2)] = text[start:i - 1]


def check_nginx(root: Path, path: Path, truth: Truth, rep: Report) -> None:
    r = rel(root, path)
    rep.start(f"nginx (static): {r}")
    ng = NginxConf(path)
    t = ng.text
    rep.check(bool(ng.upstreams), f"upstreams {list(ng.upstreams)}", "no upstream block")
    for name, body in getattr(ng, "upstream_bodies", {}).items():
        sticky = re.findall(r"^\s*(ip_hash|hash|sticky)\b", body, re.M)
        rep.check(not sticky, f"upstream {name}: no sticky balancing", f"upstream {name} is sticky: {sticky}")
    for target in re.findall(r"proxy_pass\s+https?://([^/;\s]+)", t):
        rep.check(target in ng.upstreams, f"proxy_pass http://{target} is an upstream",
                  f"proxy_pass to {target}, which is no upstream")
    rep.check(bool(re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade", t)),
              "map $http_upgrade -> $connection_upgrade", "no map $http_upgrade $connection_upgrade")
    rep.check(bool(re.search(r"proxy_http_version\s+1\.1\s*;", t)), "proxy_http_version 1.1",
              "proxy_http_version 1.1 missing (WebSocket upgrades need HTTP/1.1)")
    rep.check(bool(re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", t))
              and bool(re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade\s*;", t)),
              "Upgrade and Connection headers forwarded", "Upgrade/Connection headers not forwarded")
    ws = ng.locations.get("/ws")
    if ws is None:
        rep.fail("no location for /ws")
    else:
        rt = re.search(r"proxy_read_timeout\s+(\S+);", ws)
        rep.check(bool(rt) and duration_secs(rt.group(1)) >= 300,
                  f"/ws proxy_read_timeout {rt.group(1) if rt else '?'} suits long-lived sockets",
                  "/ws needs proxy_read_timeout of at least 300s")
    rep.check("/health" in ng.locations and "proxy_pass" in ng.locations["/health"],
              "/health is passed through to the nodes", "/health is not passed through")
    for loc in ng.locations:
        if loc.startswith("/") and not loc.startswith("/api/") and loc not in ("/", "/nginx-health", "/metrics") \
                and "proxy_pass" in ng.locations[loc]:
            rep.check(loc in truth.routes, f"location {loc} is a node route", f"location {loc} is no node route")
    for loc in ng.locations:
        if loc.startswith("/api/v1/"):
            rep.check(loc[len("/api/v1"):] in truth.routes, f"location {loc} is a node route",
                      f"location {loc} is no node route")
    for fm in re.finditer(r"log_format\s+\S+((?:\s*'[^']*')+)", t):
        leaks = re.findall(r"\$(request|request_uri|args|query_string|arg_token)\b", fm.group(1))
        rep.check(not leaks, "access log format has no query string (tokens in /ws?token=)",
                  f"access log logs the query string via {leaks}: /ws?token= would leak tokens")
    if re.search(r"access_log\s+(?!off)\S+\s*;", t):
        rep.fail("an access_log without a format uses 'combined', which logs /ws?token=...")


# --------------------------------------------------------------------------- otel collector

class OtelConf:
    def __init__(self, doc: dict) -> None:
        self.doc = doc or {}
        self.ports = {8888}  # the collector's own telemetry
        for kind in ("receivers", "exporters", "extensions"):
            for _, cfg in (self.doc.get(kind) or {}).items():
                self._ports(cfg)

    def _ports(self, cfg) -> None:
        if isinstance(cfg, dict):
            for k, v in cfg.items():
                if k == "endpoint" and isinstance(v, str):
                    hp = parse_hostport(v)
                    if hp:
                        self.ports.add(hp[1])
                else:
                    self._ports(v)


def check_otel(root: Path, path: Path, rep: Report) -> None:
    r = rel(root, path)
    rep.start(f"OpenTelemetry collector: {r}")
    doc = load_yaml_docs(path)[0]
    service = doc.get("service") or {}
    used = {k: set() for k in OTEL_COMPONENTS}
    for ext in service.get("extensions") or []:
        used["extensions"].add(ext)
    pipelines = service.get("pipelines") or {}
    rep.check(bool(pipelines), f"pipelines {list(pipelines)}", "no service.pipelines")
    for pname, p in pipelines.items():
        ptype = pname.split("/")[0]
        rep.check(ptype in {"traces", "metrics", "logs"}, f"pipeline {pname} type",
                  f"pipeline {pname}: type must be traces, metrics or logs")
        rep.check(bool(p.get("receivers")) and bool(p.get("exporters")), f"pipeline {pname} has receivers and exporters",
                  f"pipeline {pname} needs receivers and exporters")
        for kind in ("receivers", "processors", "exporters"):
            for comp in p.get(kind) or []:
                used[kind].add(comp)
    for kind, names in used.items():
        defined = set((doc.get(kind) or {}).keys())
        missing = names - defined
        rep.check(not missing, f"{kind} used in service are defined: {sorted(names)}" if names else f"no {kind}",
                  f"{kind} used but not defined: {sorted(missing)}")
        unused = defined - names
        if unused:
            rep.warn(f"{kind} defined but unused: {sorted(unused)}")
        for n in defined:
            t = n.split("/")[0]
            rep.check(t in OTEL_COMPONENTS[kind], f"{kind[:-1]} {n} is a known component type",
                      f"{kind[:-1]} {n}: unknown component type {t!r} (typo?)")
    otlp = (doc.get("receivers") or {}).get("otlp") or {}
    protos = (otlp.get("protocols") or {})
    rep.check("http" in protos and "grpc" in protos, "OTLP receiver on gRPC and HTTP",
              "OTLP receiver should accept both grpc and http")
    metrics_exp = set().union(*[set(p.get("exporters") or []) for n, p in pipelines.items() if n.startswith("metrics")] or [set()])
    rep.check(any(e.split("/")[0] == "prometheus" for e in metrics_exp), "metrics exported to Prometheus",
              "no prometheus exporter in a metrics pipeline")
    trace_exp = set().union(*[set(p.get("exporters") or []) for n, p in pipelines.items() if n.startswith("traces")] or [set()])
    rep.check(bool(trace_exp), f"traces exported to {sorted(trace_exp)}", "no traces pipeline exporter")


# --------------------------------------------------------------------------- grafana

def promql_metrics(expr: str) -> tuple[set[str], set[str], list[str]]:
    """(metric names, label names used in by/without, unknown functions) of a PromQL expression."""
    s = re.sub(r"\$\{?\w+(?::\w+)?\}?", " ", expr)
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', s)
    labels = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", s):
        labels |= {x.strip() for x in m.group(1).split(",") if x.strip()}
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    for m in re.finditer(r"\{([^}]*)\}", s):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m.group(1)))
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    names, funcs = set(), []
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", s):
        tok, call = m.group(1), m.group(2)
        if call:
            if tok not in PROMQL_FUNCS and tok not in PROMQL_KEYWORDS:
                funcs.append(tok)
        elif tok.lower() not in PROMQL_KEYWORDS:
            names.add(tok)
    return names, labels, funcs


def check_grafana(root: Path, gdir: Path, truth: Truth, rep: Report) -> None:
    rep.start(f"Grafana: {rel(root, gdir)}")
    uids = set()
    for f in sorted((gdir / "provisioning/datasources").glob("*.y*ml")):
        doc = load_yaml_docs(f)[0]
        rep.check(doc.get("apiVersion") == 1, f"{rel(root, f)}: apiVersion 1", f"{rel(root, f)}: apiVersion must be 1")
        for ds in doc.get("datasources", []):
            ok = all(ds.get(k) for k in ("name", "type", "url"))
            rep.check(ok, f"{rel(root, f)}: datasource {ds.get('name')} ({ds.get('type')}, uid {ds.get('uid')})",
                      f"{rel(root, f)}: datasource needs name, type and url: {ds}")
            if ds.get("uid"):
                uids.add(ds["uid"])
    for f in sorted((gdir / "provisioning/dashboards").glob("*.y*ml")):
        doc = load_yaml_docs(f)[0]
        rep.check(doc.get("apiVersion") == 1 and all((p.get("options") or {}).get("path") for p in doc.get("providers", [])),
                  f"{rel(root, f)}: providers with a path", f"{rel(root, f)}: apiVersion 1 and providers[].options.path needed")
    dashboards = sorted((gdir / "dashboards").glob("*.json"))
    rep.check(bool(dashboards), f"dashboards: {[d.name for d in dashboards]}", "no dashboard JSON committed")
    for d in dashboards:
        r = rel(root, d)
        try:
            dash = json.loads(d.read_text())
        except json.JSONDecodeError as e:
            rep.fail(f"{r}: not JSON: {e}")
            continue
        rep.check(bool(dash.get("title")) and bool(dash.get("uid")), f"{r}: title {dash.get('title')!r}, uid {dash.get('uid')!r}",
                  f"{r}: needs a title and a uid")
        panels = []
        for p in dash.get("panels", []):
            panels.append(p)
            panels += p.get("panels", [])
        ids = [p.get("id") for p in panels]
        rep.check(len(ids) == len(set(ids)) and None not in ids, f"{r}: {len(panels)} panels with unique ids",
                  f"{r}: panel ids missing or repeated")
        used, bad, bad_labels, bad_funcs, bad_ds = set(), set(), set(), set(), set()
        exprs = []
        for p in panels:
            if p.get("type") == "row":
                continue
            if not p.get("gridPos"):
                rep.fail(f"{r}: panel {p.get('title')!r} has no gridPos")
            refs = [t.get("refId") for t in p.get("targets", [])]
            if len(refs) != len(set(refs)):
                rep.fail(f"{r}: panel {p.get('title')!r} repeats a refId")
            for obj in [p] + p.get("targets", []):
                ds = obj.get("datasource")
                if isinstance(ds, dict) and ds.get("uid") and not str(ds["uid"]).startswith("$") and ds["uid"] not in uids:
                    bad_ds.add(ds["uid"])
            for t in p.get("targets", []):
                exprs.append(t.get("expr", ""))
                for lab in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")):
                    if lab not in truth.labels:
                        bad_labels.add(lab)
        for v in (dash.get("templating") or {}).get("list", []):
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else (q or "")
            m = re.match(r"\s*label_values\((.*),\s*(\w+)\)\s*$", q)
            if m:
                exprs.append(m.group(1))
                if m.group(2) not in truth.labels:
                    bad_labels.add(m.group(2))
            elif q:
                exprs.append(q)
            ds = v.get("datasource")
            if isinstance(ds, dict) and ds.get("uid") and ds["uid"] not in uids:
                bad_ds.add(ds["uid"])
        for e in exprs:
            names, labels, funcs = promql_metrics(e)
            for n in names:
                if n in truth.series or n in PROM_BUILTIN_SERIES:
                    used.add(n)
                else:
                    bad.add(n)
            bad_labels |= {lab for lab in labels if lab not in truth.labels}
            bad_funcs |= set(funcs)
        rep.check(not bad, f"{r}: {len(used)} metric series used, all exist in the code's /metrics",
                  f"{r}: metrics not in node/src/metrics.rs (or the modules it renders): {sorted(bad)}")
        rep.check(not bad_labels, f"{r}: labels used exist ({sorted(truth.labels)})",
                  f"{r}: unknown labels {sorted(bad_labels)}")
        rep.check(not bad_funcs, f"{r}: PromQL functions known", f"{r}: unknown PromQL functions {sorted(bad_funcs)}")
        rep.check(not bad_ds, f"{r}: datasource uids are provisioned ({sorted(uids)})",
                  f"{r}: datasource uids {sorted(bad_ds)} are not provisioned")
        unused = sorted(n for n, k in truth.metrics.items()
                        if not any(s in used for s in ([n] if k != "histogram" else [n + "_bucket", n + "_sum", n + "_count"])))
        if unused:
            rep.warn(f"{r}: metrics not on the dashboard: {unused}")
        else:
            rep.ok(f"{r}: every metric of the code is on the dashboard")


# --------------------------------------------------------------------------- prometheus (structure)

def check_prometheus(root: Path, path: Path, rep: Report) -> None:
    r = rel(root, path)
    rep.start(f"Prometheus (structure): {r}")
    doc = load_yaml_docs(path)[0]
    jobs = [j.get("job_name") for j in doc.get("scrape_configs", [])]
    rep.check(len(jobs) == len(set(jobs)) and None not in jobs, f"jobs {jobs}", "job names missing or repeated")
    rep.check("parley" in jobs, "job parley (the dashboard's) exists", "no job named parley (the dashboard queries job=\"parley\")")


# --------------------------------------------------------------------------- kubernetes

NAMESPACED = {"Secret", "ConfigMap", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget",
              "NetworkPolicy", "ServiceAccount"}
API_VERSIONS = {"Namespace": "v1", "Secret": "v1", "ConfigMap": "v1", "Service": "v1",
                "StatefulSet": "apps/v1", "Deployment": "apps/v1", "PodDisruptionBudget": "policy/v1",
                "NetworkPolicy": "networking.k8s.io/v1", "ServiceAccount": "v1"}


def selector_matches(sel: dict, labels: dict) -> bool:
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def check_k8s(root: Path, kdir: Path, truth: Truth, dockerfile: Dockerfile, rep: Report) -> None:
    rep.start(f"Kubernetes: {rel(root, kdir)}")
    objs = []
    files = sorted(p for p in kdir.glob("*.y*ml") if p.name != "kustomization.yaml")
    for f in files:
        for d in load_yaml_docs(f):
            objs.append((rel(root, f), d))
    kust = kdir / "kustomization.yaml"
    if kust.exists():
        res = (load_yaml_docs(kust)[0] or {}).get("resources", [])
        rep.check(sorted(res) == sorted(f.name for f in files), f"kustomization.yaml lists every manifest ({len(res)})",
                  f"kustomization.yaml resources {sorted(res)} != files {sorted(f.name for f in files)}")
    by_kind: dict[str, dict[str, dict]] = {}
    namespaces = set()
    for r, o in objs:
        kind, api, meta = o.get("kind"), o.get("apiVersion"), o.get("metadata") or {}
        if not kind or not api or not meta.get("name"):
            rep.fail(f"{r}: apiVersion, kind and metadata.name are required")
            continue
        rep.check(API_VERSIONS.get(kind) == api, f"{r}: {kind}/{meta['name']} ({api})",
                  f"{r}: {kind} should be apiVersion {API_VERSIONS.get(kind, '?')}, not {api}")
        by_kind.setdefault(kind, {})[meta["name"]] = o
        if kind == "Namespace":
            namespaces.add(meta["name"])
    for r, o in objs:
        kind, meta = o.get("kind"), o.get("metadata") or {}
        if kind in NAMESPACED:
            rep.check(meta.get("namespace") in namespaces, f"{r}: {kind}/{meta.get('name')} in namespace {meta.get('namespace')}",
                      f"{r}: {kind}/{meta.get('name')} namespace {meta.get('namespace')!r} is not defined here")

    secrets = by_kind.get("Secret", {})
    for name, s in secrets.items():
        data = dict(s.get("stringData") or {})
        data.update(s.get("data") or {})
        for k, v in (s.get("stringData") or {}).items():
            rep.check(len(str(v)) >= 16, f"Secret {name}: {k} placeholder is at least 16 characters",
                      f"Secret {name}: {k} is shorter than 16 characters (the node refuses it)")
    configmaps = by_kind.get("ConfigMap", {})
    for name, cm in configmaps.items():
        check_env(truth, {k: str(v) for k, v in (cm.get("data") or {}).items()}, f"ConfigMap {name}", rep, "")

    services = by_kind.get("Service", {})
    for sname, sts in by_kind.get("StatefulSet", {}).items():
        spec = sts.get("spec") or {}
        tpl = spec.get("template") or {}
        labels = (tpl.get("metadata") or {}).get("labels") or {}
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        rep.check(selector_matches(sel, labels), f"StatefulSet {sname}: selector matches the pod labels",
                  f"StatefulSet {sname}: selector {sel} does not match the pod labels {labels}")
        replicas = spec.get("replicas", 1)
        ns = (sts.get("metadata") or {}).get("namespace")
        headless = services.get(spec.get("serviceName", ""))
        rep.check(bool(headless) and (headless.get("spec") or {}).get("clusterIP") == "None",
                  f"StatefulSet {sname}: serviceName {spec.get('serviceName')} is a headless Service",
                  f"StatefulSet {sname}: serviceName {spec.get('serviceName')!r} is not a headless Service here")
        if headless:
            rep.check((headless.get("spec") or {}).get("publishNotReadyAddresses") is True,
                      f"Service {spec.get('serviceName')}: publishNotReadyAddresses (seeds resolve before ready)",
                      f"Service {spec.get('serviceName')}: needs publishNotReadyAddresses: true (a pod is ready only once joined)")
        pod = tpl.get("spec") or {}
        grace = pod.get("terminationGracePeriodSeconds", 30)
        rep.check(grace >= 30, f"StatefulSet {sname}: terminationGracePeriodSeconds {grace} >= 30",
                  f"StatefulSet {sname}: terminationGracePeriodSeconds {grace} < 30 (drain needs time)")
        psc = pod.get("securityContext") or {}
        uid = psc.get("runAsUser")
        rep.check(psc.get("runAsNonRoot") is True and uid not in (None, 0),
                  f"StatefulSet {sname}: runs as non-root uid {uid}", f"StatefulSet {sname}: must run as non-root")
        volumes = {v["name"] for v in pod.get("volumes") or []}
        volumes |= {((v.get("metadata") or {}).get("name")) for v in spec.get("volumeClaimTemplates") or []}
        for c in pod.get("containers") or []:
            where = f"StatefulSet {sname} container {c.get('name')}"
            image = c.get("image", "")
            rep.check(bool(image) and ":" in image.split("/")[-1], f"{where}: image {image} has a tag",
                      f"{where}: image {image!r} needs a tag")
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
            env_list = c.get("env") or []
            env = {}
            helpers = set()
            defined = set()
            for e in env_list:
                n = e.get("name")
                v = e.get("value")
                for ref in re.findall(r"\$\((\w+)\)", str(v or "")):
                    if ref not in defined:
                        rep.fail(f"{where}: {n} uses $({ref}) before (or without) defining it; Kubernetes "
                                 "expands only variables defined earlier in env")
                defined.add(n)
                vf = e.get("valueFrom") or {}
                if "secretKeyRef" in vf:
                    ref = vf["secretKeyRef"]
                    sec = secrets.get(ref.get("name"))
                    keys = set((sec or {}).get("stringData") or {}) | set((sec or {}).get("data") or {})
                    rep.check(bool(sec) and ref.get("key") in keys,
                              f"{where}: {n} <- Secret {ref.get('name')}/{ref.get('key')}",
                              f"{where}: {n} refers to missing Secret key {ref.get('name')}/{ref.get('key')}")
                if "fieldRef" in vf and not n.startswith(("PARLEY_", "OTEL_")):
                    helpers.add(n)
                # A value from a Secret or the downward API counts as set (known at run time).
                env[n] = str(v) if v is not None else ("$(valueFrom)" if vf else None)
            for n in helpers:
                users = [e["name"] for e in env_list if f"$({n})" in str(e.get("value", ""))]
                rep.check(bool(users), f"{where}: helper {n} is used by {users}",
                          f"{where}: {n} is neither a Parley variable nor used by one")
            for ef in c.get("envFrom") or []:
                cm = (ef.get("configMapRef") or {}).get("name")
                if cm:
                    rep.check(cm in configmaps, f"{where}: envFrom ConfigMap {cm} exists",
                              f"{where}: envFrom ConfigMap {cm} is not defined")
                    for k, v in ((configmaps.get(cm) or {}).get("data") or {}).items():
                        env.setdefault(k, str(v))
                sec = (ef.get("secretRef") or {}).get("name")
                if sec:
                    rep.check(sec in secrets, f"{where}: envFrom Secret {sec} exists", f"{where}: Secret {sec} not defined")
            check_env(truth, env, where, rep, "", helpers)
            args = list(c.get("args") or [])
            if c.get("command"):
                rep.warn(f"{where}: command overrides the image entrypoint")
            flags = check_args(truth, args, f"{where} args", rep, "") if args else {}

            def setting(flag: str) -> str | None:
                if flag in flags:
                    return flags[flag]
                f = truth.flags[flag]
                if f.env and env.get(f.env) is not None:
                    return env[f.env]
                return dockerfile.env.get(f.env) if f.env else None

            lp = parse_hostport(setting("listen") or "127.0.0.1:8080")
            rep.check(bool(lp) and lp[0] not in ("127.0.0.1", "::1") and ports.get("http") == lp[1],
                      f"{where}: listens on {setting('listen')} = containerPort http",
                      f"{where}: listen {setting('listen')} does not match containerPort http {ports.get('http')} "
                      "or is loopback")
            cl = setting("cluster-listen")
            cluster_listen_ok(cl, where, rep, "", advertise=setting("cluster-advertise"))
            clp = parse_hostport(cl or "")
            rep.check(bool(clp) and ports.get("cluster") == clp[1], f"{where}: cluster port {clp[1] if clp else '?'} = containerPort cluster",
                      f"{where}: --cluster-listen {cl} does not match containerPort cluster {ports.get('cluster')}")
            if cl:
                rep.check(bool(setting("cluster-secret")), f"{where}: cluster secret set", f"{where}: cluster secret missing")
            if headless and clp:
                hp = {p.get("name"): p for p in (headless.get("spec") or {}).get("ports") or []}
                rep.check("cluster" in hp and hp["cluster"].get("port") == clp[1],
                          f"{where}: headless Service exposes the cluster port {clp[1]}",
                          f"{where}: headless Service has no 'cluster' port {clp[1]}")
            rep.check(setting("node-name") == "$(POD_NAME)" and any(
                (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
                and e["name"] == "POD_NAME" for e in env_list),
                f"{where}: node name is the pod name", f"{where}: node name should be $(POD_NAME) (metadata.name)")
            seeds = [s for s in (setting("seeds") or "").split(",") if s]
            want = {f"{sname}-{i}.{spec.get('serviceName')}.{ns}.svc.cluster.local:{clp[1] if clp else 9080}"
                    for i in range(replicas)}
            rep.check(set(seeds) == want, f"{where}: seeds are the {replicas} stable pod DNS names",
                      f"{where}: seeds {seeds} != the pods' stable names {sorted(want)}")
            for probe, path_ in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
                pr = (c.get(probe) or {}).get("httpGet") or {}
                port = pr.get("port")
                port_ok = port in ports or port in ports.values()
                rep.check(pr.get("path") == path_ and pr.get("path") in truth.routes and port_ok
                          and (ports.get(port, port) == (lp[1] if lp else None)),
                          f"{where}: {probe} GET {pr.get('path')} on {port}",
                          f"{where}: {probe} should GET {path_} on the http port (got {pr})")
            sp = (c.get("startupProbe") or {}).get("httpGet") or {}
            if sp:
                rep.check(sp.get("path") in truth.routes, f"{where}: startupProbe {sp.get('path')} is a route",
                          f"{where}: startupProbe {sp.get('path')} is no route")
            pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
            rep.check(bool(pre), f"{where}: preStop hook {pre}", f"{where}: no preStop hook")
            cmd = (pre.get("exec") or {}).get("command") or []
            if cmd and cmd[0] == "sleep":
                secs = int(cmd[1]) if len(cmd) > 1 and str(cmd[1]).isdigit() else 0
                rep.check(secs + 15 <= grace, f"{where}: preStop {secs}s + drain fits in the grace period {grace}s",
                          f"{where}: preStop {secs}s leaves less than 15s of the grace period {grace}s for the drain")
            res = c.get("resources") or {}
            rep.check(all(k in (res.get("requests") or {}) for k in ("cpu", "memory"))
                      and "memory" in (res.get("limits") or {}),
                      f"{where}: resources {res}", f"{where}: needs cpu/memory requests and a memory limit")
            for vm in c.get("volumeMounts") or []:
                rep.check(vm.get("name") in volumes, f"{where}: volume {vm.get('name')} at {vm.get('mountPath')}",
                          f"{where}: volumeMount {vm.get('name')} has no volume")
            data_dir = setting("data-dir")
            if data_dir:
                rep.check(any(vm.get("mountPath") == data_dir for vm in c.get("volumeMounts") or []),
                          f"{where}: data dir {data_dir} is a volume", f"{where}: data dir {data_dir} is not mounted")
            ann = (tpl.get("metadata") or {}).get("annotations") or {}
            if ann.get("prometheus.io/path"):
                rep.check(ann["prometheus.io/path"] in truth.routes and str(ann.get("prometheus.io/port")) == str(lp[1] if lp else ""),
                          f"{where}: prometheus.io annotations point at {ann['prometheus.io/path']} on {ann.get('prometheus.io/port')}",
                          f"{where}: prometheus.io annotations do not point at /metrics on the http port")

        for kind in ("Service", "PodDisruptionBudget"):
            for oname, o in by_kind.get(kind, {}).items():
                s = (o.get("spec") or {})
                sel = s.get("selector") if kind == "Service" else (s.get("selector") or {}).get("matchLabels")
                rep.check(selector_matches(sel or {}, labels), f"{kind} {oname}: selector matches the pods",
                          f"{kind} {oname}: selector {sel} matches no pod of StatefulSet {sname}")
                if kind == "Service":
                    for p in s.get("ports") or []:
                        tp = p.get("targetPort", p.get("port"))
                        pod_ports = {}
                        for c in pod.get("containers") or []:
                            pod_ports.update({pp.get("name"): pp.get("containerPort") for pp in c.get("ports") or []})
                        rep.check(tp in pod_ports or tp in pod_ports.values(), f"Service {oname}: port {p.get('port')} -> {tp}",
                                  f"Service {oname}: targetPort {tp} is no container port")
                    if oname != spec.get("serviceName"):
                        rep.check(s.get("sessionAffinity", "None") == "None", f"Service {oname}: no session affinity",
                                  f"Service {oname}: sticky sessions are not needed (sessionAffinity)")
                else:
                    rep.check(s.get("maxUnavailable") == 1, f"PodDisruptionBudget {oname}: maxUnavailable 1",
                              f"PodDisruptionBudget {oname}: maxUnavailable should be 1")
        for oname, o in by_kind.get("NetworkPolicy", {}).items():
            sel = ((o.get("spec") or {}).get("podSelector") or {}).get("matchLabels")
            rep.check(selector_matches(sel or {}, labels), f"NetworkPolicy {oname}: selects the pods",
                      f"NetworkPolicy {oname}: podSelector {sel} matches no pod")


# --------------------------------------------------------------------------- Dockerfile

def check_dockerfile(root: Path, df: Dockerfile, truth: Truth, rep: Report) -> None:
    r = rel(root, df.path)
    rep.start(f"Dockerfile: {r}")
    stages = df.stages
    rep.check(len(stages) >= 2, f"multi-stage: {[s[0] + (' AS ' + s[1] if s[1] else '') for s in stages]}",
              "not multi-stage")
    if not stages:
        return
    rep.check(stages[0][0] == "rust:1-bookworm", f"builder FROM {stages[0][0]}", f"builder should be rust:1-bookworm, is {stages[0][0]}")
    rep.check(stages[-1][0] == "debian:bookworm-slim", f"runtime FROM {stages[-1][0]}",
              f"runtime should be debian:bookworm-slim, is {stages[-1][0]}")
    builder = stages[0][1]
    # Which instructions belong to which stage.
    stage_of = []
    idx = -1
    for kw, rest in df.instructions:
        if kw == "FROM":
            idx += 1
        stage_of.append(idx)
    last = len(stages) - 1
    build_cmds = [rest for (kw, rest) in df.instructions if kw == "RUN" and "cargo build" in rest]
    rep.check(len(build_cmds) == 1, "one cargo build step", f"expected one cargo build step, found {len(build_cmds)}")
    built_bins = set()
    produced = {}
    for cmd in build_cmds:
        cb = cmd[cmd.index("cargo build"):].split("&&")[0]
        toks = shlex.split(cb)
        rep.check("--release" in toks and "--locked" in toks, "cargo build --release --locked",
                  "cargo build needs --release and --locked")
        pkgs = [toks[i + 1] for i, t in enumerate(toks) if t in ("-p", "--package") and i + 1 < len(toks)]
        for p in pkgs:
            if p in truth.packages:
                built_bins |= set(truth.packages[p]["bins"])
                rep.ok(f"-p {p} is a workspace package ({truth.packages[p]['dir']}/, bins {truth.packages[p]['bins']})")
            else:
                rep.fail(f"-p {p} is not a workspace package ({sorted(truth.packages)})")
        rep.check({"parley-node", "parley-loadtest"} <= set(pkgs), "builds parley-node and parley-loadtest",
                  f"should build -p parley-node -p parley-loadtest, builds {pkgs}")
        for m in re.finditer(r"\bcp\s+([^&;]+)", cmd):
            parts = shlex.split(m.group(1))
            dest = parts[-1]
            for src in parts[:-1]:
                mm = re.fullmatch(r"(?:\./)?target/release/([\w.-]+)", src)
                if not mm:
                    rep.fail(f"copies {src}, not a target/release/<binary>")
                elif mm.group(1) not in built_bins:
                    rep.fail(f"copies target/release/{mm.group(1)}, which is not a binary of the built packages {sorted(built_bins)}")
                else:
                    produced[dest.rstrip("/") + "/" + mm.group(1)] = mm.group(1)
                    rep.ok(f"target/release/{mm.group(1)} is a built binary")
    installed = {}
    for (kw, rest), st in zip(df.instructions, stage_of):
        if kw == "COPY" and st == last and f"--from={builder}" in rest:
            parts = shlex.split(rest.replace(f"--from={builder}", ""))
            dest = parts[-1]
            for src in parts[:-1]:
                rep.check(src in produced, f"COPY --from={builder} {src} (made by the build step)",
                          f"COPY --from={builder} {src}: the build step does not produce it ({sorted(produced)})")
                if src in produced:
                    installed[produced[src]] = dest.rstrip("/") + "/" + produced[src]
        if kw == "COPY" and st == 0:
            if rest.split()[0] not in (".", "./"):
                rep.warn(f"builder COPY {rest}: check that it includes every crate, Cargo.lock and node/web/")
    rep.check(set(installed) >= {"parley-node", "parley-loadtest"}, f"runtime has {sorted(installed)}",
              f"runtime image lacks a binary: {sorted(installed)}")
    ep = [rest for kw, rest in df.instructions if kw == "ENTRYPOINT"]
    if ep:
        try:
            epl = json.loads(ep[-1])
        except json.JSONDecodeError:
            epl = shlex.split(ep[-1])
        rep.check(bool(epl) and (epl[0] in installed or epl[0] in installed.values()),
                  f"ENTRYPOINT {epl} is an installed binary on PATH",
                  f"ENTRYPOINT {epl} is not one of the installed binaries {installed}")
        check_args(truth, epl[1:], f"{r} ENTRYPOINT", rep, "") if len(epl) > 1 else None
    else:
        rep.fail("no ENTRYPOINT")
    cmd = [rest for kw, rest in df.instructions if kw == "CMD"]
    if cmd:
        check_args(truth, json.loads(cmd[-1]), f"{r} CMD", rep, "")
    check_env(truth, df.env, f"{r} ENV", rep, "")
    users = [rest for (kw, rest), st in zip(df.instructions, stage_of) if kw == "USER" and st == last]
    rep.check(bool(users) and users[-1].split(":")[0] not in ("0", "root"), f"runs as USER {users[-1] if users else '?'}",
              "the runtime stage must switch to a non-root USER")
    lp = parse_hostport(df.env.get("PARLEY_LISTEN", "127.0.0.1:8080"))
    rep.check(bool(lp) and lp[0] == "0.0.0.0", f"PARLEY_LISTEN {df.env.get('PARLEY_LISTEN')} is reachable from outside",
              "PARLEY_LISTEN must be 0.0.0.0:<port> in the image (the node binds exactly what it says)")
    exposed = {int(p.split("/")[0]) for kw, rest in df.instructions if kw == "EXPOSE" for p in rest.split()}
    rep.check(bool(lp) and lp[1] in exposed and 9080 in exposed, f"EXPOSE {sorted(exposed)} (HTTP and cluster)",
              f"EXPOSE {sorted(exposed)} should include the listen port and 9080")
    vols = [rest for kw, rest in df.instructions if kw == "VOLUME"]
    vol_paths = set()
    for v in vols:
        try:
            vol_paths |= set(json.loads(v))
        except json.JSONDecodeError:
            vol_paths |= set(v.split())
    rep.check(df.env.get("PARLEY_DATA_DIR") in vol_paths, f"VOLUME {sorted(vol_paths)} is PARLEY_DATA_DIR",
              f"PARLEY_DATA_DIR {df.env.get('PARLEY_DATA_DIR')} is not a VOLUME")
    hc = [rest for kw, rest in df.instructions if kw == "HEALTHCHECK"]
    runtime_runs = " ".join(rest for (kw, rest), st in zip(df.instructions, stage_of) if kw == "RUN" and st == last)
    if hc:
        paths = re.findall(r"http://[^/\s\"]+(/[\w/]+)", hc[-1])
        rep.check(bool(paths) and paths[0] == "/health" and "/health" in truth.routes,
                  f"HEALTHCHECK GET {paths[0] if paths else '?'}", f"HEALTHCHECK should GET /health: {hc[-1]}")
        if "curl" in hc[-1]:
            rep.check(bool(re.search(r"apt-get install[^&]*\bcurl\b", runtime_runs)),
                      "curl is installed in the runtime image", "HEALTHCHECK uses curl, which the runtime stage does not install")
    else:
        rep.fail("no HEALTHCHECK")
    rep.check(bool(re.search(r"apt-get install[^&]*\bca-certificates\b", runtime_runs)),
              "ca-certificates installed", "ca-certificates not installed in the runtime image")
    for mem in truth.members:
        rep.check((root / mem / "Cargo.toml").exists(), f"crate directory {mem}/ exists", f"crate directory {mem}/ missing")

    # .dockerignore at the context root.
    di = root / ".dockerignore"
    if not di.exists():
        rep.fail(".dockerignore missing at the repository root")
        return
    pats = [ln.strip() for ln in di.read_text().splitlines() if ln.strip() and not ln.startswith("#")]

    def ignored(path: str) -> bool:
        res = False
        for p in pats:
            neg = p.startswith("!")
            pp = p[1:] if neg else p
            pp = pp.rstrip("/")
            if fnmatch.fnmatch(path, pp) or fnmatch.fnmatch(path, pp + "/*") or path.startswith(pp + "/"):
                res = not neg
        return res

    for must in ("target", ".git", "data"):
        rep.check(ignored(must), f".dockerignore excludes {must}/", f".dockerignore should exclude {must}/")
    needed = ["Cargo.toml", "Cargo.lock", "node/web/index.html"] + [f"{m}/Cargo.toml" for m in truth.members] \
        + [f"{m}/src/lib.rs" for m in truth.members if (root / m / "src/lib.rs").exists()] \
        + [f"{m}/src/main.rs" for m in truth.members if (root / m / "src/main.rs").exists()]
    bad = [n for n in needed if ignored(n)]
    rep.check(not bad, ".dockerignore keeps Cargo.lock, every crate and node/web/", f".dockerignore excludes needed files {bad}")


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--strict", action="store_true", help="problems in LENIENT files are failures too")
    ap.add_argument("--cargo-metadata", help="output of `cargo metadata --format-version 1` to cross-check packages")
    a = ap.parse_args()
    root = Path(a.root).resolve()
    deploy = root / "deploy"
    rep = Report(a.strict)

    rep.start("YAML and JSON parse")
    parsed_ok = True
    for f in sorted(list(deploy.rglob("*.yml")) + list(deploy.rglob("*.yaml"))):
        try:
            docs = load_yaml_docs(f)
            rep.ok(f"{rel(root, f)}: {len(docs)} document(s)")
        except yaml.YAMLError as e:
            parsed_ok = False
            rep.fail(f"{rel(root, f)}: {str(e).splitlines()[0]} ({' '.join(str(e).split())[:160]})")
    for f in sorted(deploy.rglob("*.json")):
        try:
            json.loads(f.read_text())
            rep.ok(f"{rel(root, f)}: JSON")
        except json.JSONDecodeError as e:
            parsed_ok = False
            rep.fail(f"{rel(root, f)}: {e}")
    if not parsed_ok:
        print(f"\nvalidate.py: {rep.failures} failure(s); later checks skipped until every file parses")
        return 1

    truth = Truth(root, rep)
    if a.cargo_metadata:
        meta = json.loads(Path(a.cargo_metadata).read_text())
        members = set(meta.get("workspace_members", []))
        cargo_pkgs = {p["name"]: sorted(t["name"] for t in p["targets"] if "bin" in t["kind"])
                      for p in meta["packages"] if p["id"] in members}
        ours = {k: sorted(v["bins"]) for k, v in truth.packages.items()}
        rep.check(cargo_pkgs == ours, "cargo metadata agrees on the workspace packages and binaries",
                  f"cargo metadata {cargo_pkgs} != Cargo.toml parse {ours}")
    dockerfile = Dockerfile(deploy / "Dockerfile")
    check_dockerfile(root, dockerfile, truth, rep)
    for f in sorted(deploy.glob("docker-compose*.y*ml")):
        check_compose(root, f, truth, dockerfile, rep)
    check_nginx(root, deploy / "nginx.conf", truth, rep)
    check_otel(root, deploy / "otel-collector.yaml", rep)
    check_prometheus(root, deploy / "prometheus.yml", rep)
    check_grafana(root, deploy / "grafana", truth, rep)
    check_k8s(root, deploy / "k8s", truth, dockerfile, rep)

    print(f"\nvalidate.py: {rep.passed} checks passed, {rep.warnings} warning(s), {rep.failures} failure(s)")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())
