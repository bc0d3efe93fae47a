"""bot/ reaches the outside services only through its composition root.

bot/app.py builds the adapters (and bot/cli.py those its commands need, such as ``doctor``); every
other module of bot/ speaks to them through the ports and reads the services' payloads with the
pure modules beside the ports. The check reads the sources with ``ast``, so it sees lazy imports
inside functions too:

* no module of bot/ but the composition root imports an adapter module (``ADAPTERS``) or a service's
  SDK (``SDKS``);
* the modules bot/ may import (``SHARED``) import no adapter module either, so importing one never
  loads an adapter (and its SDK) behind the rule's back;
* every module of integrations/ is one or the other, so a new module is placed on purpose.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSITION_ROOT = {"bot/app.py", "bot/cli.py"}

#: modules that reach a service (through its SDK, HTTP, git, the local board or MLflow), or serve only those that do
ADAPTERS = {
    "integrations.github",  # GitHub through PyGithub: source control, issues, checks, Actions
    "integrations.github_projects",  # retrain tickets as cards on a GitHub Project (GraphQL)
    "integrations.azure_devops",  # Azure Boards, Repos and Pipelines through the azure-devops client
    "integrations.azure_boards_states",  # the work item states an episode walks through on Azure Boards
    "integrations.slack",  # Slack through slack-sdk
    "integrations.local",  # the local board, console chat, in-process engine
    "integrations.workspace",  # git workspaces and the engine that runs pipelines in them
    "integrations.mlflow_registry",  # the model registry on MLflow
    "integrations.mlflow_import",  # a folder registry imported into MLflow
    "integrations.mlflow_flavor",  # the pyfunc loader copied into each MLflow model
    "integrations.permissions",  # doctor's permission checks, through the adapters' clients
    "integrations.api_calls",  # request counting inside the SDK clients' HTTP sessions
}
#: the ports and the pure modules beside them: values, parsers, renderers and signature checks, no client
SHARED = {
    "integrations.ports",
    "integrations.ticket_references",
    "integrations.github_payloads",
    "integrations.github_project_refs",
    "integrations.board_stages",
    "integrations.azure_payloads",
    "integrations.slack_payloads",
    "integrations.slack_blocks",
    "integrations.mlflow_webhooks",
}


#: the services' SDKs: only adapters (and the composition root) use them
SDKS = {"github", "slack_sdk", "azure", "msrest", "mlflow"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Each module ``path`` imports (at any depth: lazy imports too), with its line; ``from a import b``
    gives ``a.b`` as well as ``a``, since ``b`` may be a module."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _adapter_imports(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for line, module in sorted(imported_modules(path)):
            if module in ADAPTERS or module.split(".")[0] in SDKS:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_only_the_composition_root_of_bot_imports_adapters() -> None:
    modules = [p for p in sorted((ROOT / "bot").rglob("*.py")) if str(p.relative_to(ROOT)) not in COMPOSITION_ROOT]
    assert modules, "no module of bot/ found"
    found = _adapter_imports(modules)
    assert not found, ("outside bot/app.py and bot/cli.py, bot/ imports adapters (use a port, or move the pure "
                       "code beside the ports):\n" + "\n".join(found))


def test_the_modules_bot_may_import_import_no_adapter() -> None:
    found = _adapter_imports([ROOT / (name.replace(".", "/") + ".py") for name in sorted(SHARED)])
    assert not found, "a module beside the ports imports an adapter:\n" + "\n".join(found)


def test_every_module_of_integrations_is_an_adapter_or_shared() -> None:
    modules = {_module_name(p) for p in (ROOT / "integrations").glob("*.py")} - {"integrations"}
    assert not ADAPTERS & SHARED, f"both an adapter and shared: {sorted(ADAPTERS & SHARED)}"
    assert not modules - ADAPTERS - SHARED, \
        f"put each in ADAPTERS or SHARED in {Path(__file__).name}: {sorted(modules - ADAPTERS - SHARED)}"
    assert not (ADAPTERS | SHARED) - modules, f"no such module in integrations/: {sorted((ADAPTERS | SHARED) - modules)}"
