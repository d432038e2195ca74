"""The files users run vuegraf with under Docker, checked without a Docker engine.

The image is built and run for real by tests/deploy/test_docker_image.py (on an engine of its
own, when dockerd and debootstrap are installed). Here the Dockerfile, .dockerignore, the
Compose template and env.template are parsed and checked against each other and against the
program (its command line, its state directory variable), and the Dockerfile against what the
classic builder of Docker 20.10 accepts; the shell scripts are checked with `bash -n` and
shellcheck (skipped when not installed) and run against stand-in `docker`, `docker-compose` and
`influx` commands (and the real `docker-compose` 1.x where installed); the rendered Compose file
goes through `docker-compose config`, which needs no engine (skipped when not installed); and
every runnable shell block of docs/docker.md is run in a copy of the repository.

PyYAML is not a dependency, so the Compose template is read by `read_yaml` below: a small
reader for the block-style subset that file uses (it raises on anything else, so a template
that outgrows it fails here instead of being half-read).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import require_binary
from vuegraf.cli import build_parser
from vuegraf.config import STATE_DIR_ENV, InfluxV2Config, parse_config
from vuegraf.shard import SHARD_ENV, Shard, resolve_shard

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_TEMPLATE = ROOT / "docker-compose.yaml.template"
ENV_TEMPLATE = ROOT / "env.template"
RUN_SCRIPT = ROOT / "docker-compose-run.sh"
INIT_SCRIPT = ROOT / "deploy/influxdb/apply-vuegraf-template.sh"
K8S = ROOT / "deploy/k8s"
K8S_SHARDS = K8S / "shards"
DOCS = ROOT / "docs/docker.md"

STATE_DIR = "/opt/vuegraf/state"
CONF_DIR = "/opt/vuegraf/conf"
DEFAULT_BASE = "python:3.11-slim-bookworm"
VENV = "/opt/venv"
SECRET_ENV = ("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN", "DOCKER_INFLUXDB_INIT_PASSWORD")


# ---------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    cmd: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.args
        return value


@dataclass(frozen=True)
class Dockerfile:
    directives: list[str]  # parser directives (`# syntax=...`, `# escape=...`) at the very top
    preamble: list[Instruction]  # what comes before the first FROM (only ARG may)
    stages: list[list[Instruction]]


def parse_dockerfile(text: str) -> Dockerfile:
    """Parser directives, the global ARGs and the instructions of each stage; continuation
    lines joined, comments dropped."""
    directives = []
    for raw in text.splitlines():
        m = re.match(r"^#\s*([a-zA-Z]+)\s*=", raw)
        if not m:
            break  # directives end at the first line that is not one (comment, blank, FROM)
        directives.append(m.group(1).lower())
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comments (and parser directives) may sit inside continued lines too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        cmd, _, args = full.partition(" ")
        instructions.append(Instruction(cmd.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    preamble: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
        else:
            assert ins.cmd == "ARG", f"{ins.cmd} before the first FROM (only ARG may be there)"
            preamble.append(ins)
    return Dockerfile(directives, preamble, stages)


def flags_and_rest(args: str) -> tuple[dict[str, str], str]:
    """`--a=1 --b=2 REST` -> ({"a": "1", "b": "2"}, "REST")."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def stages(dockerfile) -> list[list[Instruction]]:
    return dockerfile.stages


@pytest.fixture(scope="module")
def final(stages) -> list[Instruction]:
    return stages[-1]


def only(stage: list[Instruction], cmd: str) -> Instruction:
    found = [i for i in stage if i.cmd == cmd]
    assert len(found) == 1, f"expected exactly one {cmd} in the final stage, found {found}"
    return found[0]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.cmd == "ENV":
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                assert sep, f"use ENV KEY=VALUE, not {ins.args!r}"
                env[key] = value
    return env


def build_args(stage: list[Instruction]) -> dict[str, str | None]:
    args: dict[str, str | None] = {}
    for ins in stage:
        if ins.cmd == "ARG":
            name, sep, default = ins.args.partition("=")
            args[name] = default if sep else None
    return args


def test_dockerfile_needs_no_buildkit(dockerfile):
    """Docker 20.10 builds with its classic builder unless told otherwise, and Compose v1
    always does: no parser directive (`# syntax=` makes BuildKit fetch a frontend image from a
    registry), and nothing only BuildKit understands."""
    assert dockerfile.directives == [], "no parser directives"
    for stage in dockerfile.stages:
        for ins in stage:
            flags, _rest = flags_and_rest(ins.args)
            if ins.cmd == "RUN":
                assert not flags, f"RUN {ins.args}: RUN --mount/--network/--security need BuildKit"
                assert "<<" not in ins.args, f"RUN {ins.args}: here-documents need BuildKit"
            if ins.cmd in ("COPY", "ADD"):
                assert set(flags) <= {"from", "chown"}, f"{ins.cmd} {ins.args}: BuildKit only"
                assert "<<" not in ins.args, f"{ins.cmd} {ins.args}: here-documents need BuildKit"


def test_two_stages_on_one_overridable_base_image(dockerfile, stages):
    # The base is a build argument declared before the first FROM, python:3.11 by default.
    assert build_args(dockerfile.preamble) == {"BASE_IMAGE": DEFAULT_BASE}
    assert len(stages) == 2, "a build stage and the final stage"
    for stage in stages:
        assert stage[0].args.split()[0] == "${BASE_IMAGE}"
    assert stages[0][0].args.split()[1:] == ["AS", "build"]
    assert stages[1][0].args.split()[1:] == []
    # The default base's Python is one vuegraf supports.
    minor = re.fullmatch(r"python:3\.(\d+)-slim-bookworm", DEFAULT_BASE)
    assert minor and (3, int(minor.group(1))) >= (3, 11)
    assert re.search(r'python_requires=">=3\.11"', (ROOT / "setup.py").read_text())


def test_build_stage_installs_vuegraf_into_a_venv_without_pip_or_setuptools(stages):
    runs = [i.args for i in stages[0] if i.cmd == "RUN"]
    script = " && ".join(runs)
    # `python3`, which every base has (Debian's python3 package has no `python` command).
    assert not re.search(r"(?<![\w/.-])python(?![\w.-])", script), "use python3, not python"
    steps = [step.strip() for step in script.split("&&")]
    assert steps[0] == f"python3 -m venv {VENV}"
    pip = f"{VENV}/bin/python3 -m pip"
    installs = [step for step in steps if step.startswith(f"{pip} install")]
    assert installs == [f"{pip} install --no-cache-dir ."]
    # Build tools are gone from the venv before it is copied; pip last (it removes itself).
    uninstalls = [step for step in steps if step.startswith(f"{pip} uninstall")]
    removed = [set(u.split("--yes")[1].split()) for u in uninstalls]
    assert {"setuptools"} <= set().union(*removed) and removed[-1] == {"pip"}
    assert steps.index(installs[0]) < steps.index(uninstalls[0])
    # A smoke test of the installed command ends the stage.
    assert steps[-1] == f"{VENV}/bin/vuegraf --version"
    assert env_of(stages[0]).get("PIP_NO_CACHE_DIR") == "1"


def test_final_stage_copies_only_the_venv_and_installs_nothing(final):
    copies = [i for i in final if i.cmd in ("COPY", "ADD")]
    assert [(c.cmd, c.args) for c in copies] == [("COPY", f"--from=build {VENV} {VENV}")]
    for run in (i.args for i in final if i.cmd == "RUN"):
        # pip only to take the base image's own pip, setuptools and wheel away, where it has
        # them (python:3.11-slim does); never to install anything.
        assert "venv" not in run and not re.search(r"\bpip\S* install\b", run), run
        commands = set(re.findall(r"python3 -m pip (\S+)", run))
        assert commands <= {"--version", "uninstall"}, run
        if "uninstall" in commands:
            assert "pip uninstall --yes --no-cache-dir wheel setuptools pip;" in run, run
        assert "apt-get" not in run and "apk " not in run, run
        assert not re.search(r"\b(gcc|g\+\+|build-essential|make|cargo|rustc)\b", run), run
        assert not re.search(r"\S+-dev\b", run), run
    # The venv's commands come first on PATH; the rest is spelled out, since a base made with
    # `docker import` has no PATH to extend.
    path = env_of(final)["PATH"].split(":")
    assert path[0] == f"{VENV}/bin"
    assert path[1:] == ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin",
                        "/bin"]


def test_final_stage_runs_as_uid_1012_named_vuegraf(final):
    user = only(final, "USER").args
    uid, _, gid = user.partition(":")
    assert uid == "1012" and gid in ("", "1012"), user
    setup = " ".join(i.args for i in final if i.cmd == "RUN")
    assert re.search(r"groupadd --gid 1012 vuegraf\b", setup)
    assert re.search(r"useradd --uid 1012 --gid 1012\b.* vuegraf\b", setup)
    assert f"chown vuegraf:vuegraf {STATE_DIR}" in setup
    # USER comes after every RUN: the image's own setup runs as root, the program never does.
    index = final.index(only(final, "USER"))
    assert all(i.cmd != "RUN" for i in final[index:])


def test_workdir_volumes_and_state_dir_variable_match_the_program(final):
    assert only(final, "WORKDIR").args == "/opt/vuegraf"
    assert only(final, "VOLUME").exec_form() == [CONF_DIR, STATE_DIR]
    env = env_of(final)
    # The program reads this very name as its default state directory (config key stateDir wins).
    assert STATE_DIR_ENV == "VUEGRAF_STATE_DIR"
    assert env[STATE_DIR_ENV] == STATE_DIR
    config = parse_config(
        {"accounts": [{"name": "a", "email": "e", "password": "p"}]},
        Path(CONF_DIR) / "vuegraf.json",
        environ={STATE_DIR_ENV: env[STATE_DIR_ENV]},
    )
    assert config.state_dir == Path(STATE_DIR)


def test_entrypoint_and_cmd_in_exec_form_and_extra_arguments_reach_vuegraf(final):
    entrypoint = only(final, "ENTRYPOINT").exec_form()
    cmd = only(final, "CMD").exec_form()
    assert entrypoint == ["vuegraf"]
    assert cmd == [f"{CONF_DIR}/vuegraf.json"]
    assert re.search(r'"vuegraf=vuegraf\.cli:main"', (ROOT / "setup.py").read_text())
    # `docker run IMAGE` and `docker run IMAGE /opt/.../vuegraf.json --historydays 30`:
    args = build_parser().parse_args(cmd)
    assert args.configFilename == cmd[0]
    args = build_parser().parse_args([*cmd, "--historydays", "30"])
    assert (args.configFilename, args.historydays) == (cmd[0], 30)


def test_stop_signal_and_healthcheck(final):
    assert only(final, "STOPSIGNAL").args == "SIGTERM"
    flags, rest = flags_and_rest(only(final, "HEALTHCHECK").args)
    assert rest.startswith("CMD ")
    assert json.loads(rest[4:]) == ["vuegraf-health"]
    assert seconds(flags["interval"]) == 60
    assert seconds(flags["start-period"]) >= 5 * 60, "room for a start-up backfill"
    assert 0 < seconds(flags["timeout"]) < seconds(flags["interval"])
    assert int(flags["retries"]) >= 1


def test_vuegraf_health_is_a_console_script_reading_the_state_dir_variable(
    tmp_path, monkeypatch, capsys
):
    setup = (ROOT / "setup.py").read_text()
    m = re.search(r'"vuegraf-health=(vuegraf\.[\w.]+):(\w+)"', setup)
    assert m, "vuegraf-health must be a console script of vuegraf"
    main = getattr(importlib.import_module(m.group(1)), m.group(2))
    # As the HEALTHCHECK runs it: no arguments, the state directory from the image's ENV.
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    assert main([]) == 1  # no health.json yet: not healthy
    assert str(tmp_path) in capsys.readouterr().out


def test_oci_labels(final):
    labels: dict[str, str] = {}
    for ins in final:
        if ins.cmd == "LABEL":
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                labels[key] = value
    for key in ("title", "description", "licenses", "version"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.title"] == "vuegraf"
    # The base actually built on, which the stage must declare again to see.
    assert labels["org.opencontainers.image.base.name"] == "${BASE_IMAGE}"
    assert "BASE_IMAGE" in build_args(final)
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert 'license="MIT"' in (ROOT / "setup.py").read_text()
    assert "MIT License" in (ROOT / "LICENSE").read_text()


# ---------------------------------------------------------------------------------------------
# .dockerignore (Docker's rules: patterns match the path or any parent; the last match wins)
# ---------------------------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
            continue
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _ignore_regex(pattern)))
    return rules


def excluded(path: str, rules) -> bool:
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            result = not negate
    return result


@pytest.fixture(scope="module")
def ignore_rules():
    return dockerignore_rules(DOCKERIGNORE.read_text())


def test_dockerignore_matcher_follows_docker_rules():
    rules = dockerignore_rules("*\n!src/\n**/__pycache__\n")
    assert excluded(".git/config", rules)
    assert not excluded("src/vuegraf/cli.py", rules)
    assert excluded("src/vuegraf/__pycache__/cli.cpython-311.pyc", rules)


def test_dockerignore_keeps_secrets_caches_and_data_out(ignore_rules):
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".pytest_cache/v/cache/nodeids",
        ".ruff_cache/0.1/x",
        ".tox/py311/log",
        "tests/conftest.py",
        "demo/vuegraf.sqlite",
        "vuegraf.sqlite",
        "src/vuegraf/data.sqlite",
        "vuegraf.json",
        "conf/vuegraf.json",
        "src/vuegraf/vuegraf.json",
        ".env",
        "docker-compose.yaml",
        "src/vuegraf.egg-info/PKG-INFO",
        "src/vuegraf/__pycache__/cli.cpython-311.pyc",
        "build/lib/vuegraf/cli.py",
        "dist/vuegraf-2.0.0-py3-none-any.whl",
    ):
        assert excluded(path, ignore_rules), f"{path} would be sent to the builder"


def test_everything_the_dockerfile_copies_exists_and_reaches_the_builder(stages, ignore_rules):
    sources = []
    for stage in stages:
        for ins in stage:
            if ins.cmd == "COPY" and "--from" not in ins.args:
                sources += ins.args.split()[:-1]
    assert {"setup.py", "pyproject.toml", "README.md", "LICENSE", "src"} <= set(sources)
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            if "__pycache__" in rel or ".egg-info" in rel or rel.endswith((".sqlite", ".pyc")):
                continue
            assert not excluded(rel, ignore_rules), f"{rel} is needed by the build"


# ---------------------------------------------------------------------------------------------
# A tiny YAML reader for the Compose template's subset: block mappings and sequences, plain and
# quoted scalars, flow lists of scalars, comments. No anchors, no multi-line scalars.
# ---------------------------------------------------------------------------------------------


class YamlSubsetError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    quote = None
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1  # an escaped character never ends the string
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
        i += 1
    return line.rstrip()


def _scalar(text: str):
    text = text.strip()
    if text == "" or text in ("~", "null"):
        return None
    if text.startswith('"'):
        if not text.endswith('"') or len(text) < 2:
            raise YamlSubsetError(f"unterminated string {text!r}")
        return json.loads(text)  # YAML double-quoted escapes used here are JSON's
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlSubsetError(f"unterminated string {text!r}")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlSubsetError(f"unterminated flow list {text!r}")
        inner = text[1:-1].strip()
        return [_scalar(item) for item in _split_flow(inner)] if inner else []
    if text == "{}":
        return {}
    if text[0] in "{&*!|>%@`":
        raise YamlSubsetError(f"unsupported YAML: {text!r}")
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _split_flow(inner: str) -> list[str]:
    items, current, quote = [], "", None
    for c in inner:
        if quote:
            current += c
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
            current += c
        elif c == ",":
            items.append(current)
            current = ""
        else:
            current += c
    items.append(current)
    return items


def _key_value(text: str) -> tuple[str, str] | None:
    """Split `key: value` at the first colon that is followed by a space or the end."""
    m = re.match(r"^([A-Za-z0-9_./\-]+):(?:\s+(.*))?$", text)
    if not m:
        return None
    return m.group(1), (m.group(2) or "")


def read_yaml(text: str):
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"line {number}: tab in indentation")
        content = _strip_comment(raw)
        if content.strip():
            lines.append((len(content) - len(content.lstrip()), content.strip(), number))
    value, end = _block(lines, 0, 0)
    if end != len(lines):
        raise YamlSubsetError(f"line {lines[end][2]}: unexpected indentation")
    return value


def _block(lines, i, indent):
    if i >= len(lines):
        return None, i
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        return _sequence(lines, i, lines[i][0])
    return _mapping(lines, i, lines[i][0])


def _mapping(lines, i, indent):
    result: dict = {}
    while i < len(lines) and lines[i][0] == indent:
        _, text, number = lines[i]
        kv = _key_value(text)
        if kv is None:
            raise YamlSubsetError(f"line {number}: expected 'key: value', got {text!r}")
        key, rest = kv
        if key in result:
            raise YamlSubsetError(f"line {number}: duplicate key {key!r}")
        i += 1
        if rest:
            rest, i = _continued(lines, i, indent, rest)
            result[key] = _scalar(rest)
        elif i < len(lines) and (
            lines[i][0] > indent
            or (lines[i][0] == indent and lines[i][1].startswith("- "))
        ):
            result[key], i = _block(lines, i, lines[i][0])
        else:
            result[key] = None
    if i < len(lines) and lines[i][0] > indent:
        raise YamlSubsetError(f"line {lines[i][2]}: unexpected indentation")
    return result, i


def _continued(lines, i, indent, text):
    """A plain scalar may go on over more-indented lines (YAML folds them with spaces)."""
    if text[0] in "\"'[":
        return text, i
    while i < len(lines) and lines[i][0] > indent and not lines[i][1].startswith("- "):
        if _key_value(lines[i][1]) is not None:
            break
        text += " " + lines[i][1]
        i += 1
    return text, i


def _sequence(lines, i, indent):
    result: list = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
        _, text, number = lines[i]
        item = text[1:].strip()
        if not item:
            value, i = _block(lines, i + 1, indent + 1)
            result.append(value)
            continue
        kv = _key_value(item)
        if kv is None:
            item, i = _continued(lines, i + 1, indent, item)
            result.append(_scalar(item))
            continue
        # "- key: value" opens a mapping whose other keys sit at the item's indentation.
        inner_indent = indent + (len(text) - len(item))
        lines[i] = (inner_indent, item, number)
        value, i = _mapping(lines, i, inner_indent)
        result.append(value)
    return result, i


def test_yaml_reader_reads_what_compose_files_say():
    doc = read_yaml(
        "a:\n  b: \"x: #y\"  # comment\n  c: [\"CMD\", 'p', 3]\n"
        "  d:\n    - one\n    - k: v\n      k2: 2\n  e:\n  f:\n  - z\n"
    )
    assert doc == {"a": {"b": "x: #y", "c": ["CMD", "p", 3],
                         "d": ["one", {"k": "v", "k2": 2}], "e": None, "f": ["z"]}}
    # A long plain scalar folded over lines, as YAML dumpers write it.
    folded = read_yaml("a:\n  b: /a long\n    path/x\n  c: 1\n")
    assert folded == {"a": {"b": "/a long path/x", "c": 1}}
    with pytest.raises(YamlSubsetError):
        read_yaml("a: &anchor 1\n")


# ---------------------------------------------------------------------------------------------
# Compose template and env.template
# ---------------------------------------------------------------------------------------------


def read_env_template() -> dict[str, str]:
    values = {}
    for line in ENV_TEMPLATE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), line
            assert key not in values, f"{key} twice"
            values[key] = value
    return values


@pytest.fixture(scope="module")
def compose():
    return read_yaml(COMPOSE_TEMPLATE.read_text())


def test_compose_services_images_and_restart(compose):
    services = compose["services"]
    assert set(services) == {"influxdb", "vuegraf"}
    influx = services["influxdb"]
    assert influx["image"] == "influxdb:2.7"
    assert influx["environment"]["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert influx["healthcheck"]["test"] == ["CMD", "influx", "ping"]
    vuegraf = services["vuegraf"]
    assert vuegraf["build"]["context"] == "@VUEGRAF_DIR@"
    assert vuegraf["depends_on"] == {"influxdb": {"condition": "service_healthy"}}
    for service in services.values():
        assert service["restart"] == "unless-stopped"


def _volumes(service) -> dict[str, dict]:
    return {v["target"]: v for v in service["volumes"]}


def test_compose_volumes_persist_influxdb_and_feed_vuegraf_its_conf_and_state(compose, final):
    named = set(compose["volumes"])
    influx = _volumes(compose["services"]["influxdb"])
    for target in ("/var/lib/influxdb2", "/etc/influxdb2"):
        assert influx[target]["type"] == "volume" and influx[target]["source"] in named
    template = influx["/templates/influx_dashboard.json"]
    assert template["source"] == "@VUEGRAF_DIR@/influx_dashboard.json" and template["read_only"]
    init = next(v for t, v in influx.items() if t.startswith("/docker-entrypoint-initdb.d/"))
    assert init["target"].endswith(".sh")
    assert init["source"] == "@VUEGRAF_DIR@/" + INIT_SCRIPT.relative_to(ROOT).as_posix()
    assert os.access(INIT_SCRIPT, os.X_OK), "the influxdb image runs only executable init scripts"
    # vuegraf: exactly the image's two volumes.
    vuegraf = _volumes(compose["services"]["vuegraf"])
    assert set(vuegraf) == set(only(final, "VOLUME").exec_form())
    assert vuegraf[CONF_DIR]["source"] == "@CONF_DIR@" and vuegraf[CONF_DIR]["read_only"]
    assert vuegraf[STATE_DIR]["type"] == "volume" and vuegraf[STATE_DIR]["source"] in named
    assert env_of(final)[STATE_DIR_ENV] == STATE_DIR
    assert STATE_DIR_ENV not in compose["services"]["vuegraf"]["environment"]


def test_compose_variables_come_from_env_template(compose):
    # Compose interpolates values, not comments.
    text = "\n".join(_strip_comment(line) for line in COMPOSE_TEMPLATE.read_text().splitlines())
    env = read_env_template()
    used: dict[str, set[str]] = {}
    for m in re.finditer(r"\$\{([A-Z][A-Z0-9_]*)(:?[-?])?([^}]*)\}", text):
        used.setdefault(m.group(1), set()).add(m.group(2) or "")
    for name, operators in used.items():
        assert name in env or operators <= {":-", "-"}, f"${{{name}}}: not in .env, no default"
    # Every setting of env.template is used (COMPOSE_PROJECT_NAME by Compose itself).
    assert set(env) - set(used) == {"COMPOSE_PROJECT_NAME"}
    influx_env = compose["services"]["influxdb"]["environment"]
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        name = f"DOCKER_INFLUXDB_INIT_{key}"
        assert influx_env[name] == f"${{{name}:?set in .env}}"
    for name in SECRET_ENV:
        assert env[name] == "", f"{name} must stay empty in the template (the script fills it)"
    vuegraf_env = compose["services"]["vuegraf"]["environment"]
    assert vuegraf_env["INFLUX_TOKEN"] == "${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN:?set in .env}"
    assert vuegraf_env["INFLUX_ORG"] == "${DOCKER_INFLUXDB_INIT_ORG:?set in .env}"
    assert vuegraf_env["INFLUX_BUCKET"] == "${DOCKER_INFLUXDB_INIT_BUCKET:?set in .env}"


# ---------------------------------------------------------------------------------------------
# Kubernetes manifests: the image's contract, credentials only from Secrets
# ---------------------------------------------------------------------------------------------


def manifests(directory: Path) -> list[dict]:
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        for part in re.split(r"(?m)^---\s*$", path.read_text()):
            doc = read_yaml(part)
            if doc is not None:
                docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict]:
    return manifests(K8S)


@pytest.fixture(scope="module")
def k8s_shard_docs() -> list[dict]:
    return manifests(K8S_SHARDS)


def test_k8s_has_no_configmap_and_no_credentials_in_files(k8s_docs, k8s_shard_docs):
    assert {d["kind"] for d in k8s_docs} == {"Deployment", "PersistentVolumeClaim"}
    # The sharded example sits apart: `kubectl apply -f deploy/k8s/` must not start both.
    assert sorted(d["kind"] for d in k8s_shard_docs) == ["Service", "StatefulSet"]
    text = "\n".join(p.read_text() for p in sorted(K8S.rglob("*")) if p.is_file())
    assert not re.search(r"kind:\s*ConfigMap|configMap(KeyRef)?:", text)
    # Secrets are created from the user's files (see the manifest's header), never stored here.
    assert not re.search(r"(?im)^\s*(stringData|data):", text)
    assert not re.search(r'(?i)"?(password|token|pass)"?\s*:\s*"?[^\s"{$]', text)


def test_k8s_deployment_follows_the_image(k8s_docs, final):
    (deployment,) = [d for d in k8s_docs if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    uid = only(final, "USER").args.split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == uid
    (container,) = pod["containers"]
    assert container["args"] == only(final, "CMD").exec_form()
    assert "command" not in container  # the image's ENTRYPOINT stays
    assert container["livenessProbe"]["exec"]["command"][0] == "vuegraf-health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(only(final, "VOLUME").exec_form()) <= set(mounts)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "secret" in volumes[mounts[CONF_DIR]], "the config (with passwords) is a Secret"
    claim = volumes[mounts[STATE_DIR]]["persistentVolumeClaim"]["claimName"]
    assert claim in {d["metadata"]["name"] for d in k8s_docs if d["kind"] != "Deployment"}
    for env in container.get("env", []):
        assert "value" not in env, f"{env['name']}: credentials come from a secretKeyRef"
        assert "secretKeyRef" in env["valueFrom"]
    assert STATE_DIR_ENV not in {e["name"] for e in container.get("env", [])}


def test_k8s_statefulset_follows_the_image_and_gives_each_pod_its_shard(k8s_shard_docs, final):
    (sts,) = [d for d in k8s_shard_docs if d["kind"] == "StatefulSet"]
    (service,) = [d for d in k8s_shard_docs if d["kind"] == "Service"]
    spec = sts["spec"]
    replicas = spec["replicas"]
    assert replicas > 1
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    assert spec["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"  # headless: the pods' stable names
    pod = spec["template"]["spec"]
    uid = only(final, "USER").args.split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == uid
    (container,) = pod["containers"]
    assert container["args"] == only(final, "CMD").exec_form()
    assert "command" not in container  # the image's ENTRYPOINT stays
    assert container["livenessProbe"]["exec"]["command"][0] == "vuegraf-health"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(only(final, "VOLUME").exec_form()) <= set(mounts)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "secret" in volumes[mounts[CONF_DIR]], "the config (with passwords) is a Secret"
    # Each replica's own state volume, from the claim template, not one shared claim.
    assert mounts[STATE_DIR] not in volumes
    claims = {c["metadata"]["name"]: c for c in spec["volumeClaimTemplates"]}
    assert claims[mounts[STATE_DIR]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    env = container["env"]
    names = [e["name"] for e in env]
    assert STATE_DIR_ENV not in names
    # VUEGRAF_SHARD is made of the ordinal Kubernetes labels each pod with; a dependent
    # variable, $(POD_INDEX), must be defined above the one that uses it.
    assert names.index("POD_INDEX") < names.index(SHARD_ENV)
    (pod_index,) = [e for e in env if e["name"] == "POD_INDEX"]
    assert pod_index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    (shard,) = [e for e in env if e["name"] == SHARD_ENV]
    for ordinal in range(replicas):
        value = shard["value"].replace("$(POD_INDEX)", str(ordinal))
        assert resolve_shard(None, {SHARD_ENV: value}) == Shard(ordinal, replicas, SHARD_ENV)
    for e in env:
        if e["name"] not in ("POD_INDEX", SHARD_ENV):
            assert "value" not in e, f"{e['name']}: credentials come from a secretKeyRef"
            assert "secretKeyRef" in e["valueFrom"]
    header = (K8S_SHARDS / "vuegraf-shards.yaml").read_text()
    assert "kubectl apply -f deploy/k8s/shards/" in header


# ---------------------------------------------------------------------------------------------
# Shell scripts: syntax, shellcheck, and behaviour against stand-in commands
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [RUN_SCRIPT, INIT_SCRIPT], ids=lambda p: p.name)
def test_script_syntax(script):
    assert os.access(script, os.X_OK), f"{script.name} must be executable"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", [RUN_SCRIPT, INIT_SCRIPT], ids=lambda p: p.name)
def test_script_shellcheck(script):
    shellcheck = require_binary("shellcheck")  # in CI a missing tool fails, never skips
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


FAKE = """#!/bin/bash
printf '%s\\n' "$(basename "$0") $*" >>"$FAKE_LOG"
{body}
"""


def make_fake(bindir: Path, name: str, body: str = "exit 0") -> None:
    path = bindir / name
    path.write_text(FAKE.format(body=body))
    path.chmod(0o755)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """This repository's Compose files, copied into a directory whose name needs quoting."""
    repo = tmp_path / 'my "vue" $HOME & co'
    repo.mkdir()
    for path in (RUN_SCRIPT, COMPOSE_TEMPLATE, ENV_TEMPLATE, ROOT / "vuegraf.json.sample"):
        shutil.copy2(path, repo / path.name)
    return repo


# What the scripts need from the system, linked into a directory of their own, so that the
# tests see only the stand-in docker/docker-compose/influx, whatever the machine has installed.
SYSTEM_TOOLS = (
    "bash", "basename", "cat", "cp", "cut", "dirname", "find", "grep", "ls", "mkdir",
    "mktemp", "mv", "od", "rm", "sed", "tr",
)


@pytest.fixture
def fake_path(tmp_path) -> tuple[Path, dict[str, str]]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    sysbin = tmp_path / "sysbin"
    sysbin.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool, path="/usr/bin:/bin")
        assert found, tool
        (sysbin / tool).symlink_to(found)
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        "PATH": f"{bindir}:{sysbin}",
        "HOME": str(tmp_path),
        "FAKE_LOG": str(log),
        "LANG": "C.UTF-8",
    }
    return bindir, env


def run_script(checkout: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(checkout / RUN_SCRIPT.name), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=checkout,
        timeout=60,
    )


def write_config(conf: Path) -> Path:
    conf.mkdir(parents=True, exist_ok=True)
    config = conf / "vuegraf.json"
    config.write_text(json.dumps({"influxDb": {"url": "http://influxdb:8086"}}))
    return config


def test_run_script_refuses_without_vuegraf_json(checkout, fake_path):
    bindir, env = fake_path
    make_fake(bindir, "docker")
    result = run_script(checkout, env)
    assert result.returncode == 2
    assert "no vuegraf.json" in result.stderr
    assert not (checkout / ".env").exists() and not (checkout / "docker-compose.yaml").exists()
    assert Path(env["FAKE_LOG"]).read_text() == ""


def test_run_script_creates_env_renders_compose_and_starts_it(checkout, fake_path):
    bindir, env = fake_path
    make_fake(bindir, "docker")
    conf = checkout / "conf dir"
    write_config(conf)
    result = run_script(checkout, env, str(conf))
    assert result.returncode == 0, result.stderr

    env_file = checkout / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(
        line.split("=", 1)
        for line in env_file.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(values) == set(read_env_template())
    for name in SECRET_ENV:
        assert re.fullmatch(r"[0-9a-f]{64}", values[name]), name
        # Never printed.
        assert values[name] not in result.stdout + result.stderr
    assert values[SECRET_ENV[0]] != values[SECRET_ENV[1]]
    assert "random admin token" in result.stdout

    rendered = (checkout / "docker-compose.yaml").read_text()
    assert not re.search(r"@[A-Z_]+@", rendered), "a placeholder was left"
    doc = read_yaml(rendered)
    # Compose turns $$ into $; the YAML string escapes are undone by the reader.
    def compose_path(value: str) -> str:
        return value.replace("$$", "$")

    services = doc["services"]
    assert compose_path(services["vuegraf"]["build"]["context"]) == str(checkout)
    volumes = _volumes(services["vuegraf"])
    assert compose_path(volumes[CONF_DIR]["source"]) == str(conf)
    influx = _volumes(services["influxdb"])
    assert compose_path(influx["/templates/influx_dashboard.json"]["source"]) == str(
        checkout / "influx_dashboard.json"
    )
    # A lone $ would be expanded by Compose: every $ left in the paths is doubled.
    assert not re.search(r"(?<!\$)\$HOME", rendered)

    calls = Path(env["FAKE_LOG"]).read_text().splitlines()
    assert calls == [
        "docker compose version",
        "docker compose -f docker-compose.yaml up -d --build",
    ]
    assert "started with 'docker compose'" in result.stdout

    # A second run keeps .env (the token InfluxDB was set up with) as it is.
    before = env_file.read_text()
    again = run_script(checkout, env, str(conf))
    assert again.returncode == 0 and env_file.read_text() == before
    assert ".env: kept as it is" in again.stdout


def test_rendered_compose_file_passes_docker_compose_config(checkout, fake_path):
    """`docker-compose config` validates, resolves and interpolates a Compose file without a
    Docker engine: the closest thing to `up` that can run here."""
    real = require_binary("docker-compose")
    _bindir, env = fake_path
    conf = checkout / "conf"
    write_config(conf)
    assert run_script(checkout, env, "--no-start").returncode == 0
    result = subprocess.run(
        [real, "-f", "docker-compose.yaml", "config"],
        cwd=checkout, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": env["HOME"]},
    )
    assert result.returncode == 0, result.stderr
    resolved = read_yaml(result.stdout)
    dotenv = dict(
        line.split("=", 1)
        for line in (checkout / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    vuegraf = resolved["services"]["vuegraf"]
    assert vuegraf["environment"]["INFLUX_TOKEN"] == dotenv["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert vuegraf["depends_on"] == {"influxdb": {"condition": "service_healthy"}}
    # `config` writes $ as $$ again in its output; the value itself has a single $.
    assert vuegraf["build"]["context"].replace("$$", "$") == str(checkout)
    influx = resolved["services"]["influxdb"]
    assert influx["environment"]["DOCKER_INFLUXDB_INIT_PASSWORD"] == dotenv[
        "DOCKER_INFLUXDB_INIT_PASSWORD"
    ]
    assert influx["ports"] == ["127.0.0.1:8086:8086/tcp"]


def test_run_script_falls_back_to_docker_compose(checkout, fake_path):
    bindir, env = fake_path
    make_fake(bindir, "docker", 'if [ "$1" = compose ]; then exit 1; fi')
    # Compose v1 builds with the classic builder: the script leaves the builder as it is.
    make_fake(
        bindir,
        "docker-compose",
        'echo "buildkit=${DOCKER_BUILDKIT-unset} cli=${COMPOSE_DOCKER_CLI_BUILD-unset}"'
        ' >>"$FAKE_LOG"',
    )
    write_config(checkout / "conf")
    result = run_script(checkout, env)
    assert result.returncode == 0, result.stderr
    calls = Path(env["FAKE_LOG"]).read_text().splitlines()
    assert calls[-2:] == [
        "docker-compose -f docker-compose.yaml up -d --build",
        "buildkit=unset cli=unset",
    ]
    # Every command the script tells the user is the one installed.
    assert "started with 'docker-compose'" in result.stdout
    assert f"logs: cd '{checkout}' && docker-compose logs -f vuegraf" in result.stdout
    assert "docker compose " not in result.stdout


def test_run_script_without_any_compose_says_so(checkout, fake_path):
    _bindir, env = fake_path
    write_config(checkout / "conf")
    result = run_script(checkout, env)
    assert result.returncode == 1
    assert "install Docker Compose" in result.stderr


@pytest.mark.parametrize("installed", ["plugin", "v1", "none"])
def test_run_script_no_start_names_the_compose_that_is_installed(checkout, fake_path, installed):
    bindir, env = fake_path
    plugin = "exit 0" if installed == "plugin" else 'if [ "$1" = compose ]; then exit 1; fi'
    make_fake(bindir, "docker", plugin)
    if installed == "v1":
        make_fake(bindir, "docker-compose")
    write_config(checkout / "conf")
    result = run_script(checkout, env, "--no-start")
    assert result.returncode == 0, result.stderr
    assert (checkout / "docker-compose.yaml").exists()
    # Only asked for their versions: nothing is built or started.
    calls = Path(env["FAKE_LOG"]).read_text().splitlines()
    assert all(call.endswith(" version") for call in calls), calls
    (line,) = [line for line in result.stdout.splitlines() if "--no-start" in line]
    if installed == "plugin":
        assert line.endswith(f"to start: cd '{checkout}' && docker compose up -d --build")
    elif installed == "v1":
        assert line.endswith(f"to start: cd '{checkout}' && docker-compose up -d --build")
    else:
        assert "Docker Compose is not installed here" in line
        assert "docker compose up -d --build" in line and "docker-compose up -d --build" in line


def test_run_script_no_start_names_the_real_docker_compose_v1(checkout, fake_path):
    """Debian 12 with docker.io and docker-compose: no Compose plugin, Compose 1.29. The real
    docker-compose answers `version` without an engine."""
    real = require_binary("docker-compose")
    bindir, env = fake_path
    make_fake(bindir, "docker", 'if [ "$1" = compose ]; then exit 1; fi')
    (bindir / "docker-compose").symlink_to(real)
    write_config(checkout / "conf")
    result = run_script(checkout, env, "--no-start")
    assert result.returncode == 0, result.stderr
    assert f"to start: cd '{checkout}' && docker-compose up -d --build" in result.stdout


def test_run_script_refuses_an_env_without_secrets(checkout, fake_path):
    bindir, env = fake_path
    make_fake(bindir, "docker")
    write_config(checkout / "conf")
    shutil.copy(ENV_TEMPLATE, checkout / ".env")  # copied by hand, secrets left empty
    result = run_script(checkout, env)
    assert result.returncode == 2
    assert "DOCKER_INFLUXDB_INIT_PASSWORD" in result.stderr
    assert Path(env["FAKE_LOG"]).read_text() == ""


@pytest.mark.parametrize("bucket", ["vuegraf", "energy.2024", "bad\"name"])
def test_init_script_applies_the_template_for_the_bucket(tmp_path, fake_path, bucket):
    bindir, env = fake_path
    seen = tmp_path / "applied.json"
    # The stand-in influx keeps a copy of the file it was asked to apply.
    make_fake(
        bindir,
        "influx",
        'while [ "$#" -gt 0 ]; do [ "$1" = --file ] && cp "$2" "$SEEN"; shift; done',
    )
    env = {
        **env,
        "SEEN": str(seen),
        "VUEGRAF_TEMPLATE": str(ROOT / "influx_dashboard.json"),
        "DOCKER_INFLUXDB_INIT_BUCKET": bucket,
        "DOCKER_INFLUXDB_INIT_ORG": "home",
    }
    result = subprocess.run(
        [str(INIT_SCRIPT)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    (call,) = Path(env["FAKE_LOG"]).read_text().splitlines()
    assert call.startswith("influx apply --file ")
    assert call.endswith(" --force yes --org home")
    applied = json.loads(seen.read_text())
    queries = [r["spec"]["query"] for r in applied if r["kind"].startswith("Check")]
    assert len(queries) == 2
    expected = bucket if bucket != 'bad"name' else "vuegraf"
    assert all(f'from(bucket: "{expected}")' in q for q in queries)
    # Only the checks' bucket changes; the rest of the template is the same.
    original = json.loads((ROOT / "influx_dashboard.json").read_text())
    for mine, theirs in zip(applied, original, strict=True):
        if not mine["kind"].startswith("Check"):
            assert mine == theirs


def test_init_script_failure_does_not_fail_the_database_setup(tmp_path, fake_path):
    bindir, env = fake_path
    make_fake(bindir, "influx", "exit 1")
    env = {**env, "VUEGRAF_TEMPLATE": str(ROOT / "influx_dashboard.json")}
    result = subprocess.run([str(INIT_SCRIPT)], capture_output=True, text=True, env=env)
    assert result.returncode == 0
    assert "influx apply --file /templates/influx_dashboard.json" in result.stderr


# ---------------------------------------------------------------------------------------------
# docs/docker.md: every shell block that needs nothing special runs as written
# ---------------------------------------------------------------------------------------------


def doc_blocks() -> list[tuple[str | None, str]]:
    """(needs, code) of every ```sh block; needs from a `<!-- needs: ... -->` line before it."""
    text = DOCS.read_text()
    blocks = []
    for m in re.finditer(r"(?:<!--\s*needs:\s*(.*?)\s*-->\n)?```sh\n(.*?)```", text, re.S):
        blocks.append((m.group(1), m.group(2)))
    return blocks


def test_docs_blocks_that_use_docker_are_marked():
    blocks = doc_blocks()
    assert len(blocks) >= 8
    for needs, code in blocks:
        if re.search(r"^\s*(docker|\./docker-compose-run\.sh\s*$)", code, re.M):
            assert needs and "docker" in needs, code


def test_docs_shell_blocks_run_as_written(tmp_path):
    # A copy of the repository (tracked and new files alike), as a user's checkout would be;
    # without the venvs (.venv-ha, made by `make test`, is 670 MB the blocks never look at).
    repo = tmp_path / "vuegraf"
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".venv-ha", "__pycache__", "*.egg-info", ".pytest_cache",
            ".ruff_cache", ".mypy_cache",
            ".tox", "build", "dist", "demo", "conf", ".env", "docker-compose.yaml", "*.sqlite",
        ),
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "LANG": "C.UTF-8"}
    ran = 0
    for needs, code in doc_blocks():
        if needs:
            continue
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=repo, capture_output=True, text=True, env=env, timeout=120,
        )
        output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        assert result.returncode == 0, f"{code}\n{output}"
        ran += 1
    assert ran >= 4
    # What the blocks made: the config of the Compose setup, .env and docker-compose.yaml.
    assert (repo / ".env").exists() and (repo / "docker-compose.yaml").exists()
    check_compose_config(repo / "conf/vuegraf.json", repo)


def check_compose_config(path: Path, repo: Path) -> None:
    """The docs' vuegraf.json works in the Compose setup: InfluxDB 2 at the service name, the
    token from .env through ${INFLUX_TOKEN}, the state dir from the image's variable."""
    data = json.loads(path.read_text())
    compose = read_yaml((repo / "docker-compose.yaml").read_text())
    service_env = compose["services"]["vuegraf"]["environment"]
    names = set(re.findall(r"\$\{([A-Z_]+)\}", path.read_text()))
    assert names == {"INFLUX_TOKEN", "INFLUX_ORG", "INFLUX_BUCKET"}
    assert names <= set(service_env), "the config uses a variable the service does not get"
    dotenv = dict(
        line.split("=", 1)
        for line in (repo / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    # What Compose would hand the container, from .env.
    environ = {STATE_DIR_ENV: STATE_DIR}
    for name in names:
        ref = re.match(r"\$\{(\w+)", service_env[name])
        assert ref, f"{name}: {service_env[name]!r} does not name a variable of .env"
        environ[name] = dotenv[ref.group(1)]
    config = parse_config(data, Path(CONF_DIR) / "vuegraf.json", environ=environ)
    assert isinstance(config.influx, InfluxV2Config)
    assert config.influx.url == "http://influxdb:8086"
    assert config.state_dir == Path(STATE_DIR)
    assert config.influx.token == dotenv["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert config.influx.org == dotenv["DOCKER_INFLUXDB_INIT_ORG"]
    assert config.influx.bucket == dotenv["DOCKER_INFLUXDB_INIT_BUCKET"]
