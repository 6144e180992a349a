"""The Dockerfile, its build context and its pinned constraints, checked without building.

The image itself is built and run by tests/image (marker ``image``); these
checks are the fast part: lint, the shape of the stages, the allow-list of the
build context, the constraints against pyproject.toml, and the build stage's
wheel (package data and entry point) built from exactly what the COPY steps copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"


def _instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in _instructions():
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version.strip(), f"{CONSTRAINTS.name}: {line!r} is not pinned with =="
        key = canonicalize_name(name)
        assert key not in pins, f"{CONSTRAINTS.name}: {name} is pinned twice"
        pins[key] = version.strip()
    return pins


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_a_build_argument_defaulting_to_the_slim_python_image() -> None:
    first = _instructions()[0]
    assert first == "ARG BASE_IMAGE=python:3.11-slim"
    froms = [stage[0] for stage in _stages()]
    assert froms == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]


def test_the_runtime_stage_takes_only_the_wheel_from_the_build_stage_and_runs_as_user_10001() -> None:
    build, runtime = _stages()
    assert any("pip wheel --no-deps" in line for line in build)
    copies_from_build = [line for line in runtime if line.startswith("COPY --from=")]
    assert copies_from_build == [
        "COPY --from=build /src/requirements/runtime.txt /opt/feedwatch-dist/",
        "COPY --from=build /dist/ /opt/feedwatch-dist/",
    ]
    runtime_text = "\n".join(runtime)
    for tool in ("apt-get", "gcc", "build-essential", "pip wheel"):
        assert tool not in runtime_text, f"the runtime stage must not use {tool}"
    assert "--constraint /opt/feedwatch-dist/constraints.txt" in runtime_text
    assert "USER 10001:10001" in runtime
    assert runtime[-2:] == ['ENTRYPOINT ["feedwatch"]', 'CMD ["watch"]']
    # Read-only root filesystem: HOME (the only place tools write by default) is /tmp.
    assert re.search(r"\bHOME=/tmp\b", runtime_text)
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime_text
    # A new commit changes the revision label: after the last RUN, it keeps the layer cache.
    last_run = max(n for n, line in enumerate(runtime) if line.startswith("RUN "))
    first_label = min(n for n, line in enumerate(runtime) if line.startswith(("LABEL ", "ARG REVISION")))
    assert first_label > last_run
    labels = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", runtime_text))
    assert {"title", "description", "version", "revision", "licenses"} <= {
        label.removeprefix("org.opencontainers.image.") for label in labels
    }


def test_the_build_context_allows_exactly_what_the_copy_steps_copy() -> None:
    sources = {
        source.rstrip("/")
        for line in _instructions()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    }
    assert sources == {"requirements/constraints.txt", "pyproject.toml", "README.md", "operator"}
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore starts by excluding everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert allowed == sources
    for source in sources:
        assert (ROOT / source).exists(), source


def test_every_dependency_and_the_build_backend_are_pinned_to_versions_pyproject_allows() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _pins()
    wanted = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    wanted += [Requirement(r) for r in pyproject["build-system"]["requires"]]
    missing = [str(r) for r in wanted if canonicalize_name(r.name) not in pins]
    assert not missing, f"not pinned in {CONSTRAINTS.name} (run `make constraints`): {missing}"
    for requirement in wanted:
        version = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement.name}=={version} does not satisfy pyproject.toml's {requirement} "
            "(run `make constraints`)"
        )
    # Extras pull packages of their own: psycopg[binary] needs psycopg-binary, at psycopg's version.
    assert pins.get("psycopg-binary") == pins["psycopg"]
    assert "feedwatch" not in pins, "the project itself is installed from its wheel"


def test_the_constraints_say_how_they_are_generated() -> None:
    header = CONSTRAINTS.read_text().splitlines()[:4]
    assert any("make constraints" in line for line in header)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^constraints:.*\n\thack/image constraints$", makefile, re.MULTILINE)


@pytest.mark.slow
@pytest.mark.timeout(120)  # pip builds a wheel: about 6 s, more on a busy machine
def test_the_build_stage_makes_a_wheel_with_the_package_data_and_the_entry_point(tmp_path: Path) -> None:
    context = tmp_path / "src"  # only what the COPY steps copy
    (context / "requirements").mkdir(parents=True)
    shutil.copy(CONSTRAINTS, context / "requirements" / "constraints.txt")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "operator", context / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = tmp_path / "dist"
    # The build stage's RUN step: the pinned build backend, no dependencies.
    env = {**os.environ, "PIP_CONSTRAINT": str(context / "requirements" / "constraints.txt")}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(dist), "."],
        cwd=context,
        env=env,
        check=True,
        timeout=240,
    )
    (wheel,) = dist.glob("feedwatch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "feedwatch = feedwatch.cli:main" in archive.read(entry_points).decode()
    for packaged in (
        "feedwatch/py.typed",
        "feedwatch/store/migrations/versions/0001_initial.py",
        "feedwatch/store/migrations/script.py.mako",
        "feedwatch/cli.py",
    ):
        assert packaged in names, f"{packaged} missing from {wheel.name}"
