"""The flow image is built for linux/amd64 wherever the docs or CI build it.

Cloud Run runs linux/amd64 images only (its container runtime contract); `docker build` on an Apple-silicon
laptop makes linux/arm64 by default, and Cloud Run cannot start that image. So every `docker build` the README,
deployments/*.md, terraform/**/*.md, the Dockerfile's header and the GitHub workflows show passes
`--platform linux/amd64` (in a workflow, docker/build-push-action's `platforms:` works too).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
PLATFORM = "linux/amd64"

# `docker build` / `docker buildx build` / `docker image build`, up to the end of the command: a newline that is not
# continued with a backslash, a shell operator, or the closing backtick of inline code.
_BUILD = re.compile(r"\bdocker\s+(?:buildx\s+|image\s+)?build\b(?:\\\n|[^\n`;|&])*")
_PLATFORM = re.compile(r"--platform(?:=|\s+)[\"']?([\w/,.-]+)")


def builds_without_platform(text: str) -> list[str]:
    """Each `docker build` command in `text` that does not build for linux/amd64."""
    bad = []
    for match in _BUILD.finditer(text):
        command = match.group(0)
        platforms = [p for m in _PLATFORM.finditer(command) for p in m.group(1).split(",")]
        if PLATFORM not in platforms:
            bad.append(" ".join(command.replace("\\\n", " ").split()))
    return bad


def docker_builds(text: str) -> int:
    return len(_BUILD.findall(text))


def workflow_problems(path: Path) -> tuple[int, list[str]]:
    """(builds found, problems) in a GitHub workflow: run scripts and docker/build-push-action steps."""
    document = yaml.safe_load(path.read_text())
    builds, problems = 0, []
    for job_name, job in (document.get("jobs") or {}).items():
        for i, step in enumerate(job.get("steps") or []):
            where = f"{path.name}: job {job_name}, step {step.get('name') or i + 1}"
            uses = str(step.get("uses") or "")
            if uses.startswith(("docker/build-push-action", "docker/bake-action")):
                builds += 1
                with_: dict[str, Any] = step.get("with") or {}
                platforms = re.split(r"[\s,]+", str(with_.get("platforms") or "").strip())
                if PLATFORM not in platforms:
                    problems.append(f"{where}: {uses} without `platforms: {PLATFORM}`")
            run = str(step.get("run") or "")
            builds += docker_builds(run)
            problems += [f"{where}: {command}" for command in builds_without_platform(run)]
    return builds, problems


def documents() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "deployments").glob("*.md"))]
    docs += sorted((ROOT / "terraform").rglob("*.md"))
    return [*docs, ROOT / "deployments" / "Dockerfile"]


def workflows() -> list[Path]:
    return sorted(p for p in (ROOT / ".github" / "workflows").glob("*") if p.suffix in (".yml", ".yaml"))


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ('docker build -f deployments/Dockerfile -t "$IMAGE" .', True),
        ('docker build --platform linux/amd64 -f deployments/Dockerfile -t "$IMAGE" .', False),
        ('docker buildx build --platform=linux/amd64,linux/arm64 -t "$IMAGE" --push .', False),
        ('docker build --platform linux/arm64 -t "$IMAGE" .', True),
        ('docker build -f deployments/Dockerfile \\\n  --platform linux/amd64 -t "$IMAGE" .', False),
        ('docker build -t "$IMAGE" . && docker run --platform linux/amd64 "$IMAGE"', True),  # not the build's flag
        ('Build it: `docker build -t "$IMAGE" .`, then `docker push --platform linux/amd64 "$IMAGE"`.', True),
        ("docker buildx imagetools inspect python:3.11.14-slim-trixie", False),  # not a build
        ('docker image build -t "$IMAGE" .', True),
    ],
)
def test_the_check_finds_a_build_without_the_platform(text: str, flagged: bool) -> None:
    assert bool(builds_without_platform(text)) is flagged


def test_the_check_reads_build_push_action_steps(tmp_path: Path) -> None:
    step = {"uses": "docker/build-push-action@v6", "with": {"push": True, "tags": "x"}}
    workflow = {"on": "push", "jobs": {"image": {"runs-on": "ubuntu-24.04", "steps": [step]}}}
    path = tmp_path / "image.yml"
    path.write_text(yaml.safe_dump(workflow))
    assert workflow_problems(path) == (1, ["image.yml: job image, step 1: docker/build-push-action@v6 without "
                                           "`platforms: linux/amd64`"])  # fmt: skip
    step["with"]["platforms"] = "linux/amd64"  # type: ignore[index]
    path.write_text(yaml.safe_dump(workflow))
    assert workflow_problems(path) == (1, [])


def test_every_docker_build_in_the_docs_and_workflows_targets_linux_amd64() -> None:
    problems, builds = [], {}
    for path in documents():
        text = path.read_text()
        builds[path.relative_to(ROOT).as_posix()] = docker_builds(text)
        problems += [f"{path.relative_to(ROOT)}: {command}" for command in builds_without_platform(text)]
    for path in workflows():
        n, found = workflow_problems(path)
        builds[path.relative_to(ROOT).as_posix()] = n
        problems += found
    assert not problems, "Cloud Run needs linux/amd64 images; add --platform linux/amd64:\n" + "\n".join(problems)
    # the scan saw the builds people copy (a renamed or reformatted command would otherwise pass unseen)
    assert builds["README.md"] >= 1 and builds["deployments/README.md"] >= 1, builds
