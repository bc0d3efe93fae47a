"""Azure DevOps cost, counted from the Azure DevOps emulator's request log (the real azure-devops client).

1. Idle poll cycle per repository: what one `poll()` costs an Azure Repos repository when nothing
   happened, with 0, 1 and 10 active pull requests (completed pull requests, then each active one's
   threads).
2. Idle cycle per project: what one whole `run_once()` (poll, drift check, outbox, digest) costs the
   Azure Boards project when nothing happened (code on the local repository, tickets on Boards).
3. One drift episode on Azure Boards: the first model, three drifted batches (the drift growing),
   `/retrain` typed on the work item, the retrained model promoted and the work item closed.
   Counted: work items written to (goal: one), writes by kind, requests in all.

Runs on loopback only, against tests/emulators/azure_devops.py (the same emulator the tests use).

    python benchmarks/azure_bench.py
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("AZURE_DEVOPS_CACHE_DIR", tempfile.mkdtemp(prefix="ado-bench-cache-"))
for _name in ("NO_PROXY", "no_proxy"):  # loopback only, whatever proxy the environment names
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name, ""), "127.0.0.1", "localhost"]))

from bot.app import build  # noqa: E402
from common import git, settle  # noqa: E402  (benchmarks/common.py)
from bot.settings import Settings  # noqa: E402
from integrations.ports import Target  # noqa: E402
from tests.emulators.azure_devops import AzureDevOpsEmulator  # noqa: E402

_WORK_ITEM = re.compile(r"/_apis/wit/work[iI]tems/(\d+)")


def model_repo(root: Path) -> Path:
    repo = root / "repo"
    shutil.copytree(REPO_ROOT / "examples" / "breast_cancer", repo / "model")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "the model")
    return repo


def azure_settings(emulator: AzureDevOpsEmulator, repo: Path, state: Path, **extra) -> Settings:
    return Settings(project_dir=repo / "model", data_dir=state, azure_devops_org_url=emulator.base_url,
                    azure_devops_pat=emulator.pat, azure_devops_project="proj", drift_cooldown_s=0, **extra)


def idle_repository(emulator: AzureDevOpsEmulator, root: Path, repo: Path, active: int) -> int:
    """Requests of one idle poll of an Azure Repos repository with ``active`` open pull requests."""
    name = f"model-{active}"
    emulator.state.add_repo("proj", name)
    for n in range(active):
        number = emulator.state.open_pull(name, f"Work in progress {n}", "", files=["model/train.py"])
        emulator.state.add_thread_comment(name, number, "looks good")
    app = build(azure_settings(emulator, repo, root / f"state-{name}", azure_repository=name,
                               project_paths=["model"]), out=None)
    settle(app)  # first look; the first model
    app.poll()
    before = len(emulator.log)
    app.poll()
    cost = len(emulator.log) - before
    app.store.close()
    return cost


def idle_project(emulator: AzureDevOpsEmulator, root: Path, repo: Path) -> tuple[int, Counter]:
    """Requests of one idle `run_once()` for a project whose tickets are on Boards (code local)."""
    app = build(azure_settings(emulator, repo, root / "state-project"), out=None)
    settle(app)
    app.run_once()
    before = len(emulator.log)
    app.run_once()
    entries = emulator.log.entries[before:]
    app.store.close()
    return len(entries), Counter(e.route for e in entries)


def drift_episode(emulator: AzureDevOpsEmulator, root: Path, repo: Path) -> dict:
    app = build(azure_settings(emulator, repo, root / "state-episode"), out=None)
    settle(app)  # the first model
    start = len(emulator.log)
    batches = app.settings.batches_dir
    batches.mkdir(parents=True, exist_ok=True)
    for n, shift in enumerate((1.5, 2.0, 3.0), start=1):
        subprocess.run([sys.executable, str(repo / "model" / "make_batch.py"), "--shift", str(shift), "--seed", str(n),
                        "--output", str(batches / f"batch-{n}.csv")], check=True, capture_output=True)
        settle(app)
    ticket = app.tracker.find_open("retrain:breast-cancer")
    if ticket is None:
        raise RuntimeError("the drifted batches opened no work item")
    app.scm.add_comment(Target("ticket", app.scm.repo, ticket.id), "/retrain new data")
    settle(app)
    entries = emulator.log.entries[start:]
    writes = [e for e in entries if e.method not in ("GET", "OPTIONS") and not e.path.endswith("/wiql")]
    touched = sorted({int(m.group(1)) for e in writes if (m := _WORK_ITEM.search(e.path))})
    created = sum(1 for e in writes if e.route == "Work Items_Create")
    result = {
        "work_items_touched": touched, "created": created, "requests": len(entries),
        "writes": Counter(e.route for e in writes),
        "state": emulator.state.work_item(ticket.id).fields["System.State"],
        "comments": len(emulator.state.work_item(ticket.id).comments),
        "production": app.registry.production("breast-cancer").version,
    }
    app.store.close()
    return result


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    with tempfile.TemporaryDirectory(prefix="ado-bench-") as tmp, AzureDevOpsEmulator() as emulator:
        root = Path(tmp)
        emulator.state.add_project("proj")
        repo = model_repo(root)
        print("1. idle poll cycle per Azure Repos repository (requests):")
        for active in (0, 1, 10):
            print(f"   {active:>2} active pull requests: {idle_repository(emulator, root, repo, active)}")
        total, routes = idle_project(emulator, root, repo)
        print(f"2. idle run_once() per Azure Boards project: {total} requests "
              f"({', '.join(f'{k} {v}' for k, v in sorted(routes.items())) or 'none'})")
        episode = drift_episode(emulator, root, repo)
        print("3. drift episode (3 drifted batches, /retrain, promotion, close):")
        print(f"   work items touched: {len(episode['work_items_touched'])} {episode['work_items_touched']} "
              f"(created {episode['created']}; goal: one)")
        print(f"   writes: {', '.join(f'{k} {v}' for k, v in sorted(episode['writes'].items()))}")
        print(f"   requests in all: {episode['requests']}; the work item ends {episode['state']} with "
              f"{episode['comments']} comments; production v{episode['production']}")


if __name__ == "__main__":
    main()
