"""The model projects of a repository (bot/projects.py): found in a real git repository or a folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bot.projects import find_projects
from tests.conftest import git


def _project(root: Path, folder: str, name: str, *, valid: bool = True) -> None:
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    (path / "mlops.toml").write_text(textwrap.dedent(f"""
        [project]
        name = "{name}"

        [data]
        path = "data.csv"
        target = "label"

        [model]
        {"estimator" if valid else "estimatr"} = "sklearn.linear_model.LogisticRegression"

        [metrics]
        primary = "roc_auc"
    """))


def _monorepo(root: Path) -> Path:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    _project(root, "models/churn", "churn")
    _project(root, "models/fraud", "fraud")
    _project(root, "forecasting/demand", "demand")
    _project(root, "models/broken", "broken", valid=False)
    _project(root, "models/fraud-v2", "fraud")  # the same name as models/fraud
    _project(root, ".venv/lib/site-packages/somepkg", "vendored")  # ignored below
    _project(root, "build/copy", "copied")  # ignored below
    (root / ".gitignore").write_text(".venv/\nbuild/\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "models")
    _project(root, "models/new", "new")  # not committed yet, not ignored: a project being made
    return root


def test_every_folder_with_an_mlops_toml_is_a_project_and_ignored_files_are_not_searched(tmp_path):
    found = find_projects(_monorepo(tmp_path / "repo"))

    assert [(p.name, p.repo_path) for p in found.projects] == [
        ("demand", "forecasting/demand"), ("churn", "models/churn"), ("fraud", "models/fraud"), ("new", "models/new"),
    ]
    assert found.named("churn").spec.root == (tmp_path / "repo" / "models" / "churn").resolve()
    assert found.named("vendored") is None and found.named("copied") is None


def test_an_invalid_project_and_a_second_one_of_a_name_are_reported_and_the_others_served(tmp_path):
    found = find_projects(_monorepo(tmp_path / "repo"))

    problems = {problem.repo_path: problem.reason for problem in found.problems}
    assert set(problems) == {"models/broken", "models/fraud-v2"}
    assert problems["models/broken"].endswith(
        "/repo/models/broken/mlops.toml: missing key 'model.estimator'; unknown key 'model.estimatr'")
    assert problems["models/fraud-v2"] == (
        "models/fraud-v2/mlops.toml: the project name 'fraud' is taken by models/fraud/mlops.toml; give each model "
        "project of a repository its own [project] name (it names the registered model, the tickets and the channels)")
    assert all("\n" not in reason for reason in problems.values())


def test_the_search_is_narrowed_to_folders_or_patterns(tmp_path):
    repo = _monorepo(tmp_path / "repo")

    assert [p.name for p in find_projects(repo, ["forecasting"]).projects] == ["demand"]
    assert [p.name for p in find_projects(repo, ["models/churn/", "forecasting/demand"]).projects] == [
        "demand", "churn"]
    assert [p.name for p in find_projects(repo, ["models/f*"]).projects] == ["fraud"]
    assert find_projects(repo, ["models/chur"]).projects == ()  # a folder, not a prefix of a name
    assert [p.name for p in find_projects(repo, ["."]).projects] == ["demand", "churn", "fraud", "new"]


def test_a_folder_that_is_no_repository_is_walked_without_hidden_folders(tmp_path):
    root = tmp_path / "plain"
    _project(root, "", "at-the-root")
    _project(root, "a/b", "deep")
    _project(root, ".cache/copy", "hidden")
    _project(root, "node_modules/pkg", "module")

    found = find_projects(root)

    assert [(p.name, p.repo_path) for p in found.projects] == [("at-the-root", ""), ("deep", "a/b")]


def test_a_folder_inside_a_repository_is_searched_on_its_own(tmp_path):
    repo = _monorepo(tmp_path / "repo")

    found = find_projects(repo / "models")

    assert [(p.name, p.repo_path) for p in found.projects] == [("churn", "churn"), ("fraud", "fraud"), ("new", "new")]
