"""No module of ours (bot/, integrations/) reaches into an SDK: no private name of another package,
no SDK method replaced, no debug hook borrowed. What the SDKs offer for observing (a urllib3 Retry,
msrest's session callback and hooks, slack-sdk's retry handlers) is public; see integrations/api_calls.py.

The check reads the sources with ``ast``:

* a private name (``_x``, not ``__x__``) read or written on anything but ``self``/``cls`` must be one
  our own code defines (a ``def``/``class`` of that name, or an attribute set on ``self``/``cls``), or
  one of the few the SDK's own documentation tells users to use (``DOCUMENTED``);
* a few SDK internals are refused by name on anything but ``self``/``cls`` (``FORBIDDEN``), even
  where a name of ours is spelt the same;
* assigning to an attribute that is a method of an SDK class (``x.requestJsonAndCheck = ...``) is
  replacing the SDK's code, whatever its name.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("bot", "integrations")
OURS = ("bot", "integrations", "pipeline")

#: private-looking names the package's own documentation tells its users to use, and why
DOCUMENTED = {
    "_mapping": "SQLAlchemy's Row._mapping, its documented dict view of a row",
    "_replace": "namedtuple's documented _replace (urllib.parse results are namedtuples)",
    "_can_retry": "slack-sdk's docs (Web Client, RetryHandler): what a custom RetryHandler implements",
}
#: SDK internals refused by name on any object but self or cls
FORBIDDEN = {
    "DEBUG_ON_RESPONSE", "NEW_DEBUG_FRAME",  # PyGithub's debug frames
    "_Github__requester", "_Requester__requestRaw", "_requester",  # PyGithub's private state
    "_handle_error", "_send", "_send_request", "_client", "_creds",  # the azure-devops client's internals
}


def _sdk_methods() -> set[str]:
    """Every method name of the SDK classes the adapters hold: replacing one is patching the SDK."""
    from azure.devops.client import Client
    from azure.devops.connection import Connection
    from github.MainClass import Github
    from github.Requester import Requester
    from msrest.service_client import ServiceClient
    from slack_sdk import WebClient

    names: set[str] = set()
    for cls in (Github, Requester, Client, Connection, ServiceClient, WebClient):
        names |= {name for name, member in inspect.getmembers(cls) if callable(member) and not name.startswith("__")}
    return names


def _is_own_object(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def _is_super(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def defined_names(trees: list[ast.AST]) -> set[str]:
    """Private names our code defines: functions, classes, and attributes set on self or cls (or in a class body)."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
                if isinstance(node, ast.ClassDef):
                    for statement in node.body:
                        targets = statement.targets if isinstance(statement, ast.Assign) else \
                            [statement.target] if isinstance(statement, ast.AnnAssign) else []
                        names |= {t.id for t in targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_own_object(node.value):
                names.add(node.attr)
    return {name for name in names if name.startswith("_")}


def problems(tree: ast.AST, where: str, ours: set[str], sdk_methods: set[str]) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        name, line = node.attr, f"{where}:{node.lineno}"
        shown = ast.unparse(node)
        if name in FORBIDDEN and not _is_own_object(node.value):
            found.append(f"{line}: {shown} (an SDK internal)")
        elif isinstance(node.ctx, ast.Store) and not _is_own_object(node.value) and name in sdk_methods:
            found.append(f"{line}: {shown} = ... (replaces an SDK method)")
        elif name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
            if _is_own_object(node.value) or name in ours:
                continue
            if name in DOCUMENTED and (name != "_can_retry" or _is_super(node.value)):
                continue
            found.append(f"{line}: {shown} (a private name of another package)")
    return found


def sources() -> dict[str, ast.AST]:
    return {str(path.relative_to(ROOT)): ast.parse(path.read_text(), str(path))
            for folder in OURS for path in sorted((ROOT / folder).rglob("*.py"))}


def test_no_module_of_ours_touches_an_sdk_private_name_or_replaces_an_sdk_method():
    trees = sources()
    ours, sdk_methods = defined_names(list(trees.values())), _sdk_methods()
    found = [problem for where, tree in trees.items() if where.split("/", 1)[0] in CHECKED
             for problem in problems(tree, where, ours, sdk_methods)]
    assert not found, "reaching into an SDK (use its public extension points instead):\n" + "\n".join(found)


@pytest.mark.parametrize("code, flagged", [
    ("requester.DEBUG_ON_RESPONSE = on_response", True),  # what bot/observability.py did
    ("requester.requestJsonAndCheck = counting", True),
    ("sdk._handle_error = keep_status", True),  # what integrations/azure_devops.py did
    ("sdk._send(http_method='GET', location_id=x, version=v)", True),
    ("gh._Github__requester.requestJsonAndCheck('GET', '/user')", True),
    ("client._mlops_bot_hook = hook", True),  # our name, set on an SDK object: not ours
    ("headers, data = gh.requester.requestJsonAndCheck('GET', url)", False),  # PyGithub's documented raw call
    ("self._clients[kind] = sdk", False),
    ("row._mapping['id']", False),
    ("parts._replace(query='')", False),
    ("super()._can_retry(state=state, request=request)", False),
    ("other._can_retry(state=state, request=request)", True),
    ("config.retry_policy.retries = 3", False),  # configuration the SDK documents
])
def test_the_check_tells_reaching_in_from_public_use(code, flagged):
    ours = {"_clients"}
    assert bool(problems(ast.parse(code), "snippet", ours, _sdk_methods())) is flagged


def test_observability_asks_adapters_what_they_can_do_and_imports_no_adapter():
    tree = sources()["bot/observability.py"]
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.startswith("integrations.") and name != "integrations.ports"}
    assert not {name for name in imported if name.split(".")[0] in ("github", "slack_sdk", "azure", "msrest")}
    probes = [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "__module__"]
    assert not probes
