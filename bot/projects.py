"""The model projects a repository holds: every folder with an ``mlops.toml``.

One deployment serves several model projects when the repository holds several (a monorepo of
models). They are found by listing the repository's files (``git ls-files``: tracked files and new
ones not ignored, so a virtual environment or a data folder is never searched), or by walking the
folder when it is no git repository. A project whose ``mlops.toml`` is invalid is reported with its
reason and left out; the others are served. Two projects of one repository with the same
``[project]`` name would share their registered model, tickets and channels: the first (by path)
keeps the name and the others are reported.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.spec import SPEC_FILENAME, ProjectSpec, SpecError, load_project

__all__ = ["FoundProject", "ProjectProblem", "RepositoryProjects", "find_projects", "git_root", "projects_to_serve",
           "shared_project_settings"]

# Folders a walk (no git repository to list the files) never enters: environments, caches and the
# bot's own data, where an mlops.toml would be a copy, not a project.
_NEVER_SEARCHED = {"node_modules", "__pycache__", "site-packages", "venv", "env"}
_GIT_TIMEOUT_S = 30


@dataclass(frozen=True)
class FoundProject:
    """A model project of the repository: its spec, and its folder's path inside the repository."""

    spec: ProjectSpec
    repo_path: str  # "" for the repository's root folder

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class ProjectProblem:
    """A folder with an ``mlops.toml`` that is not served, and why (one line, with the fix)."""

    repo_path: str
    reason: str


@dataclass(frozen=True)
class RepositoryProjects:
    projects: tuple[FoundProject, ...]
    problems: tuple[ProjectProblem, ...]

    def named(self, name: str) -> FoundProject | None:
        return next((project for project in self.projects if project.name == name), None)


def find_projects(repo_root: Path, search: Sequence[str] = ()) -> RepositoryProjects:
    """Every model project in the repository at ``repo_root``, in path order.

    ``search`` narrows where to look (MLOPS_PROJECT_PATHS): folders inside the repository, or
    patterns like ``models/*``; a project is kept when its folder is one of them or lies below one.
    """
    root = Path(repo_root).expanduser().resolve()
    projects: list[FoundProject] = []
    problems: list[ProjectProblem] = []
    for repo_path in sorted(_project_folders(root), key=lambda path: (path.count("/"), path)):
        if search and not any(_under(repo_path, wanted) for wanted in search):
            continue
        try:
            spec = load_project(root / repo_path)
        except SpecError as exc:
            problems.append(ProjectProblem(repo_path, str(exc)))
            continue
        first = next((project for project in projects if project.name == spec.name), None)
        if first is not None:
            problems.append(ProjectProblem(repo_path, (
                f"{_shown(repo_path)}/{SPEC_FILENAME}: the project name {spec.name!r} is taken by "
                f"{_shown(first.repo_path)}/{SPEC_FILENAME}; give each model project of a repository its own "
                "[project] name (it names the registered model, the tickets and the channels)")))
            continue
        projects.append(FoundProject(spec, repo_path))
    return RepositoryProjects(tuple(projects), tuple(problems))


def _project_folders(root: Path) -> Iterator[str]:
    listed = _git_listed(root)
    names = listed if listed is not None else _walked(root)
    for name in names:
        path = PurePosixPath(name)
        if path.name == SPEC_FILENAME:
            folder = path.parent.as_posix()
            yield "" if folder == "." else folder


def git_root(path: Path) -> Path | None:
    """The root folder of the git repository holding ``path``; None if none does (or git is missing)."""
    try:
        done = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True,
                              text=True, timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip()) if done.returncode == 0 else None


def _git_listed(root: Path) -> list[str] | None:
    """The repository's tracked files and its new files that are not ignored; None if ``root`` is
    not a git repository's root (a folder inside one is walked, so paths are the folder's own)."""
    top = git_root(root)
    if top is None or top.resolve() != root:
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--deduplicate",
             "--", f":(glob)**/{SPEC_FILENAME}"],
            capture_output=True, timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return [name for name in done.stdout.decode().split("\0") if name]


def _walked(root: Path) -> Iterator[str]:
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(".") and name not in _NEVER_SEARCHED)
        if SPEC_FILENAME in files:
            yield Path(folder, SPEC_FILENAME).relative_to(root).as_posix()


def _under(repo_path: str, wanted: str) -> bool:
    wanted = wanted.strip().strip("/")
    if wanted in ("", "."):
        return True
    if any(character in wanted for character in "*?["):
        parts = repo_path.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[:depth]), wanted) for depth in range(1, len(parts) + 1))
    return repo_path == wanted or repo_path.startswith(wanted + "/")


def _shown(repo_path: str) -> str:
    return repo_path or "."


def projects_to_serve(settings) -> tuple[Path, RepositoryProjects] | None:
    """The repository's root and every model project in it, when the bot is to serve them all:
    MLOPS_PROJECT_DIR unset and the repository (MLOPS_REPO_DIR, else the one holding the working
    folder) holding at least one, narrowed by MLOPS_PROJECT_PATHS. None otherwise: the one project
    of MLOPS_PROJECT_DIR (by default the bundled example) is served."""
    if "project_dir" in settings.model_fields_set:
        return None
    root = settings.repo_dir or git_root(Path.cwd())
    if root is None:
        return None
    root = Path(root).expanduser().resolve()
    found = find_projects(root, tuple(settings.project_paths))
    return (root, found) if found.projects else None


def shared_project_settings(settings, found: FoundProject):
    """One project's settings where the bot serves several of the repository: its folder, the paths
    whose change runs it, and its production batches and labels in a folder of its own under
    MLOPS_MONITOR_DIR and MLOPS_LABELS_DIR (``<folder>/<project>/``)."""
    return settings.model_copy(update={
        "project_dir": found.spec.root, "project_paths": [found.repo_path], "project_path": found.repo_path,
        "monitor_dir": settings.batches_dir / found.name, "labels_dir": settings.label_files_dir / found.name})
