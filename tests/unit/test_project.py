"""The project's promises to a new user: README's two commands, CI running the same, deployments that resolve."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import yaml

from flows.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    before_prose = quick_start.split("The first command", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", before_prose, re.S)]


def test_readme_starts_with_exactly_two_commands_run_then_test():
    commands = readme_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    run, test = commands
    assert run.endswith("coincap-pipeline run") and "requirements.lock" in run
    assert "pytest" in test and "requirements-dev.lock" in test
    text = (ROOT / "README.md").read_text()
    assert text.index("\n## ") == text.index("\n## Quick start"), "Quick start is the README's first section"


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()


def test_console_script_and_locks_cover_declared_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["coincap-pipeline"] == "flows.cli:main"
    dev = project["dependencies"] + project["optional-dependencies"]["dev"]
    for lock, deps in (("requirements.lock", project["dependencies"]), ("requirements-dev.lock", dev)):
        pinned = {
            line.split("==")[0].lower().replace("_", "-")
            for line in (ROOT / lock).read_text().splitlines()
            if "==" in line
        }
        for dep in deps:
            name = re.split(r"[<>=!\[ ]", dep, maxsplit=1)[0].lower().replace("_", "-")
            assert name in pinned, f"{name} is not pinned in {lock}"


def test_design_card_top_level_exists():
    for name in ("flows", "terraform", "dbt", "looker", "deployments", "prefect.yaml", "pyproject.toml", "tests",
                 "README.md"):  # fmt: skip
        assert (ROOT / name).exists(), name


def test_prefect_yaml_entrypoints_resolve_to_flows():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert config["deployments"]
    for deployment in config["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        assert hasattr(flow, "deploy"), f"{deployment['name']}: {name} is not a Prefect flow"
        for param in deployment.get("parameters", {}):
            assert param in flow.parameters.properties, f"{deployment['name']}: unknown parameter {param}"


def test_readme_names_only_commands_settings_and_outputs_that_exist():
    from flows.cli import app
    from flows.settings import Settings

    text = (ROOT / "README.md").read_text()
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    for used in set(re.findall(r"coincap-pipeline ([a-z][a-z-]+)", text)):
        assert used in commands, f"README uses `coincap-pipeline {used}`, which does not exist"
    aliases = {field.alias for field in Settings.model_fields.values()}
    external = {"PREFECT_API_URL", "PREFECT_API_KEY", "IMAGE", "COINCAP_API_KEY_SECRET"}
    for var in set(re.findall(r"\b((?:COINCAP|PIPELINE|GCP|GCS|BQ)_[A-Z_]+)\b", text)):
        assert var in aliases | external, f"README names {var}, which no setting reads"
    outputs = set(re.findall(r'output "([a-z_]+)"', (ROOT / "terraform/envs/prod/outputs.tf").read_text()))
    for used in set(re.findall(r"terraform(?: -chdir=\S+)? output (?:-raw |-json )?([a-z_]+)", text)):
        assert used in outputs, f"README reads terraform output {used}, which terraform/envs/prod does not define"
    for name in ("coincap-api-key", "coincap-cloud-run", "coincap-results"):
        assert name in text


def test_the_snapshot_datasets_are_listed_once():
    """`flows/datasets.py` names the four snapshot datasets; every other module reads them from there."""
    listing = re.compile(r'[\(\[]\s*"assets"\s*,\s*"rates"\s*,\s*"exchanges"\s*,\s*"markets"\s*[\)\]]')
    copies = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "flows").rglob("*.py")
        if path.name != "datasets.py" or path.parent.name != "flows"
        if listing.search(path.read_text())
    ]
    assert copies == [], f"the dataset list is written out again in {copies}: import flows.datasets instead"


def test_the_layering_contracts_hold_and_can_fail(tmp_path):
    """import-linter checks pyproject's contracts over the real import graph; a planted import breaks one."""
    import shutil
    import subprocess
    import sys

    lint = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    kept = subprocess.run(lint, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stdout[-3000:]
    # the same contracts over a copy of the package where the client imports Prefect
    shutil.copytree(ROOT / "flows", tmp_path / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    client = tmp_path / "flows" / "coincap" / "client.py"
    client.write_text(client.read_text() + "\nfrom prefect import flow  # planted\n")
    broken = subprocess.run(lint, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert broken.returncode != 0 and "flows.coincap.client -> prefect" in broken.stdout, broken.stdout[-2000:]


MAX_MODULE_LINES = 600


def private_imports(source: str) -> list[str]:
    """`from flows… import _name` in a module's source: a private name taken from another module."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "flows":
            found += [
                f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.endswith("__")
            ]
    return found


def oversized(root: Path) -> dict[str, int]:
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in (root / "flows").rglob("*.py")}
    return {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}


def test_no_module_imports_a_private_name_of_another_and_the_check_can_fail():
    """Modules and tests use each other's public names only (a leading underscore means "this module's own")."""
    offenders = {
        str(path.relative_to(ROOT)): found
        for folder in ("flows", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if (found := private_imports(path.read_text()))
    }
    assert offenders == {}, f"private names imported across modules: {offenders}"
    assert private_imports("from flows.coincap.client import _planted\n") == ["flows.coincap.client._planted"]
    assert private_imports("from flows.coincap import (\n    client,\n    _planted,\n)\n") == ["flows.coincap._planted"]


def test_no_module_is_over_600_lines_and_the_check_can_fail(tmp_path):
    assert oversized(ROOT) == {}, f"split these modules (over {MAX_MODULE_LINES} lines): {oversized(ROOT)}"
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert oversized(tmp_path) == {"flows/big.py": MAX_MODULE_LINES + 1}
