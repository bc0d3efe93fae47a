"""MLflow as the registry (issue 13): pipeline overhead, requests to the tracking server, start-up.

1. Pipeline overhead on the same 200k synthetic rows, the same estimator (the default
   preprocessing in front of HistGradientBoostingClassifier(max_iter=100)) and the same split:

   - A, bare: what a script of one's own does with the same input, the project's parquet file: read
     it, hold out the same rows (train_test_split, stratified, the project's seed and fraction), fit
     on the training rows, predict the held-out rows, the same metrics the pipeline reports
     (roc_auc, accuracy, log_loss); pandas and scikit-learn only. Shown beside it, not the goal's
     baseline: A-mem, the same from data already split in memory (fit + predict + metrics alone);
   - B, the bot's in-process pipeline run (pipeline.run.run_pipeline, as benchmarks/pipeline_bench.py
     drives it) publishing to the embedded MLflow store (SQLite, artifacts on disk): it also reads the
     file, fingerprints the data, saves the model with skops, writes the reference profile, scores
     production on the held-out rows, logs the MLflow run and registers the version, and promotes it;
   - C, the same pipeline publishing to a real ``mlflow server`` on loopback (SQLite backend, artifacts
     proxied by the server), started by this script on the same machine.

   The fresh-process load check of validation forks its process from a loader (pipeline/loader.py)
   that the first pipeline run starts (preparation) and later runs reuse, as in a running bot.

   Each side is timed by the same rule: wall time of the call, best of ``--repeat`` runs, the sides
   taking turns so a burst of load elsewhere lands on all of them. Preparation is not in the ratio
   and is shown separately: writing the data, ``import mlflow``, making and migrating the embedded
   store, starting the server, and each registry's first pipeline run (nothing in production yet).
   Threads: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS are set to ``--threads``
   (default 2) for this process before NumPy loads, so every side fits with the same thread count.
   Goal: B/A at most 1.2.

2. Requests to the tracking server, read from the server's access log (health checks left out):
   one whole pipeline run (side C's last timed run), one publish and promote of a small version
   alone, and one idle look (``registry.aliases(model)`` per model, what bot/app.py's
   watch_registry asks each cycle when nothing moved).

3. ``mlops-bot --help`` against ``python -c pass``: fresh processes, best of ``--startup-repeat``
   runs each, in turns. Goal: at most 0.3 s more.

    python benchmarks/mlflow_bench.py [--rows 200000] [--repeat 3] [--threads 2] [--no-server]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The same project as benchmarks/pipeline_bench.py (its data below is generated the same way).
TOML = """
[project]
name = "bench"

[data]
path = "data.parquet"
target = "label"

[model]
estimator = "sklearn.ensemble.HistGradientBoostingClassifier"
params = { max_iter = 100 }

[metrics]
primary = "roc_auc"
others = ["accuracy", "log_loss"]

[gates]
max_regression = 0.05
"""
MODEL = "bench"
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>[^ ?]+)\S* HTTP/[\d.]+" (?P<status>\d{3})')
_SERVER_READY_S = 120


def synthetic(rows: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, 20))
    frame = pd.DataFrame(numeric, columns=[f"x{i}" for i in range(20)])
    for i in range(3):
        frame[f"c{i}"] = rng.choice([f"level{k}" for k in range(8)], size=rows)
    logit = numeric[:, :5] @ np.array([1.0, -0.8, 0.6, 0.4, -0.3]) + (frame["c0"] == "level1") * 0.7
    frame["label"] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    frame.loc[rng.random(rows) < 0.02, "x3"] = np.nan
    return frame


# -- side A: bare scikit-learn ---------------------------------------------------------------------------


def prepared_split(project: Path):
    """The split and the unfitted estimator the pipeline builds for the project (not timed)."""
    from pipeline.data import load_dataset, split_dataset
    from pipeline.spec import load_project
    from pipeline.train import build_estimator

    spec = load_project(project)
    dataset = load_dataset(spec.data, spec.root)
    x_train, x_test, y_train, y_test = split_dataset(dataset, spec.data, stratify_labels=True)
    return spec, x_train, x_test, y_train, y_test, build_estimator


def bare_fit_predict_metrics(prepared) -> tuple[float, float]:
    """A-mem: seconds for fit + predict + the pipeline's metrics on the prepared split, and the
    held-out roc_auc."""
    spec, x_train, x_test, y_train, y_test, build_estimator = prepared
    estimator, _ = build_estimator(spec.model, x_train, seed=spec.data.split.seed, project_root=spec.root)
    start = time.perf_counter()
    auc = _fit_predict_metrics(estimator, x_train, x_test, y_train, y_test)
    return time.perf_counter() - start, auc


def bare_from_the_file(prepared) -> tuple[float, float]:
    """A: seconds to read the project's file, hold out the same rows, fit, predict and score, as a
    script of one's own would; and the held-out roc_auc (the same as the pipeline's: the same split)."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    spec, _x_train, _x_test, _y_train, _y_test, build_estimator = prepared
    start = time.perf_counter()
    frame = pd.read_parquet(spec.root / spec.data.path)
    target = frame.pop(spec.data.target)
    x_train, x_test, y_train, y_test = train_test_split(
        frame, target, test_size=round(len(frame) * spec.data.split.test_fraction),
        random_state=spec.data.split.seed, stratify=target)
    estimator, _ = build_estimator(spec.model, x_train.head(0), seed=spec.data.split.seed, project_root=spec.root)
    auc = _fit_predict_metrics(estimator, x_train, x_test, y_train, y_test)
    return time.perf_counter() - start, auc


def _fit_predict_metrics(estimator, x_train, x_test, y_train, y_test) -> float:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    estimator.fit(x_train, y_train)
    probabilities = estimator.predict_proba(x_test)
    predicted = estimator.classes_[probabilities.argmax(axis=1)]
    positive = list(estimator.classes_).index("yes")
    auc = roc_auc_score(y_test == "yes", probabilities[:, positive])
    accuracy_score(y_test, predicted)
    log_loss(y_test, probabilities, labels=estimator.classes_)
    return auc


# -- sides B and C: the pipeline on MLflow -----------------------------------------------------------------


def timed_pipeline_run(project: Path, registry) -> tuple[float, object]:
    from pipeline.run import run_pipeline

    start = time.perf_counter()
    result = run_pipeline(project, registry, trigger="benchmark")
    elapsed = time.perf_counter() - start
    if result.status not in {"succeeded", "not_promoted"}:
        raise SystemExit(f"the pipeline run failed at {result.failed_stage}: {result.error}")
    return elapsed, result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """A real ``mlflow server`` on a loopback port; requests counted from its access log."""

    def __init__(self, root: Path) -> None:
        executable = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
        if executable is None:
            raise SystemExit("the `mlflow` command is not installed (it comes with the full mlflow package: "
                             "pip install -e '.[test]'); or run with --no-server")
        root.mkdir(parents=True, exist_ok=True)
        self.log = root / "server.log"
        self.url = f"http://127.0.0.1:{_free_port()}"
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # else a job runner and its workers start too
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            env.pop(name, None)
        command = [executable, "server", "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
                   "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                   "--artifacts-destination", str(root / "artifacts")]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, cwd=root, start_new_session=True)
        deadline = time.monotonic() + _SERVER_READY_S
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"mlflow server did not start:\n{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    def mark(self) -> int:
        return len(self.log.read_text(errors="replace").splitlines())

    def requests_since(self, mark: int) -> list[str]:
        """The requests answered since ``mark`` as "METHOD /path", health checks left out. The server
        writes an access line just after each response: one last health check, once its own line is
        in the log, says every earlier line is too (one worker answers in order)."""
        before = self.mark()
        self._healthy()
        deadline = time.monotonic() + 30
        while True:
            lines = self.log.read_text(errors="replace").splitlines()
            if any("/health" in line for line in lines[before:]) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        found = (_ACCESS.search(line) for line in lines[mark:])
        return [f"{m['method']} {m['path']}" for m in found if m and m["path"] != "/health"]

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)  # the CLI and the uvicorn worker it started
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextmanager
def tracking_server(root: Path):
    server = TrackingServer(root)
    try:
        yield server
    finally:
        server.stop()


def publish_and_promote(registry, run_id: str) -> None:
    staging = registry.staging_dir()
    (staging / "model.bin").write_bytes(b"weights")
    version = registry.publish(MODEL, staging, {"auc": 0.9}, run_id=run_id)
    registry.promote(MODEL, version.version, reason="benchmark", run_id=run_id, trigger="benchmark")


def summary(requests: list[str]) -> str:
    """Requests counted by endpoint; artifact files (one request each) counted under their endpoint."""
    endpoints = (re.sub(r" /api/[\d.]+/", " ", re.sub(r"(/mlflow-artifacts/artifacts)/.+", r"\1/<file>", r))
                 for r in requests)
    return ", ".join(f"{count}x {what}" for what, count in Counter(endpoints).most_common())


# -- start-up ----------------------------------------------------------------------------------------------


def startup(repeat: int, data_dir: Path) -> dict[str, list[float]]:
    script = shutil.which("mlops-bot", path=str(Path(sys.executable).parent))
    bot = [script] if script else [sys.executable, "-m", "bot"]
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("GITHUB_", "SLACK_", "AZURE_", "MLFLOW_", "MLOPS_"))
           and name != "PYTHONDONTWRITEBYTECODE"}
    env["MLOPS_DATA_DIR"] = str(data_dir)
    commands = {"python -c pass": [sys.executable, "-c", "pass"], "mlops-bot --help": [*bot, "--help"]}
    subprocess.run(commands["mlops-bot --help"], check=True, capture_output=True, env=env)  # bytecode caches
    timings: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            timings[name].append(time.perf_counter() - start)
    return timings


def mlflow_imported_by_help() -> bool:
    probe = ("import sys\nfrom bot.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('MLFLOW:' + str('mlflow' in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    return "MLFLOW:True" in done.stderr


# -- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side, in turns (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="OpenMP/BLAS threads for every side (default 2)")
    parser.add_argument("--startup-repeat", type=int, default=15)
    parser.add_argument("--no-server", action="store_true", help="leave out side C and the request counts")
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)  # before NumPy and scikit-learn load: all below import them later
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(name, None)  # every registry here is given its URI
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    load = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        project = tmp_path / "project"
        project.mkdir()
        (project / "mlops.toml").write_text(textwrap.dedent(TOML))
        start = time.perf_counter()
        synthetic(args.rows).to_parquet(project / "data.parquet", index=False)
        prepared = prepared_split(project)
        data_s = time.perf_counter() - start

        start = time.perf_counter()
        import mlflow

        from integrations.mlflow_registry import MlflowRegistry, embedded_tracking_uri

        import_s = time.perf_counter() - start
        embedded_dir = tmp_path / "embedded"
        embedded = MlflowRegistry(embedded_tracking_uri(embedded_dir), data_dir=embedded_dir)
        start = time.perf_counter()
        embedded.models()  # makes the SQLite file and migrates it to MLflow's schema
        store_s = time.perf_counter() - start
        first_b, _ = timed_pipeline_run(project, embedded)

        with ExitStack() as stack:
            server = None
            if not args.no_server:
                start = time.perf_counter()
                server = stack.enter_context(tracking_server(tmp_path / "server"))
                server_s = time.perf_counter() - start
                remote = MlflowRegistry(server.url, data_dir=tmp_path / "bot-data-c")
                first_c, _ = timed_pipeline_run(project, remote)

            sides: dict[str, list[float]] = {"A": [], "A-mem": [], "B": []} | ({"C": []} if server else {})
            run_requests: list[list[str]] = []
            last_b = auc = None
            for _ in range(args.repeat):  # in turns
                elapsed, auc = bare_from_the_file(prepared)
                sides["A"].append(elapsed)
                elapsed, auc_in_memory = bare_fit_predict_metrics(prepared)
                sides["A-mem"].append(elapsed)
                elapsed, last_b = timed_pipeline_run(project, embedded)
                sides["B"].append(elapsed)
                if server:
                    mark = server.mark()
                    elapsed, _ = timed_pipeline_run(project, remote)
                    sides["C"].append(elapsed)
                    run_requests.append(server.requests_since(mark))

            if server:
                counting = MlflowRegistry(server.url, data_dir=tmp_path / "bot-data-count")
                counting.aliases(MODEL)  # MLflow imported and the client made before counting
                mark = server.mark()
                publish_and_promote(counting, "count-publish")
                publish_requests = server.requests_since(mark)
                mark = server.mark()
                counting.aliases(MODEL)
                idle_requests = server.requests_since(mark)

        timings = startup(args.startup_repeat, tmp_path / "startup-data")
        help_imports_mlflow = mlflow_imported_by_help()

    cpus = os.cpu_count()
    print(f"machine: {cpus} CPUs, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"threads: OMP/OPENBLAS/MKL_NUM_THREADS={args.threads} for every side; MLflow {mlflow.__version__}")
    print(f"{args.rows} rows x 23 features (parquet), HistGradientBoostingClassifier(max_iter=100); "
          f"best of {args.repeat} runs per side, sides in turns")
    print("preparation, not in the ratios: "
          f"data written and split {data_s:.2f} s; import mlflow {import_s:.2f} s; embedded store made and "
          f"migrated {store_s:.2f} s; first pipeline run on it (nothing in production) {first_b:.2f} s"
          + (f"; mlflow server start {server_s:.2f} s; first pipeline run on it {first_c:.2f} s" if server else ""))
    names = {"A": "A bare, from the file", "A-mem": "A-mem bare, data in memory", "B": "B pipeline run, embedded MLflow",
             "C": "C pipeline run, mlflow server"}
    print(f"{'side':<36}{'best s':>9}{'median s':>10}{'ratio to A (best)':>19}")
    bare = min(sides["A"])
    for key, runs in sides.items():
        print(f"{names[key]:<36}{min(runs):>9.2f}{sorted(runs)[len(runs) // 2]:>10.2f}{min(runs) / bare:>18.2f}x")
    ratio_b = min(sides["B"]) / bare
    print(f"B/A = {ratio_b:.2f}x (goal <= 1.2x: {'met' if ratio_b <= 1.2 else 'NOT met'})"
          + (f"; C/A = {min(sides['C']) / bare:.2f}x" if server else "")
          + f"; B/A-mem = {min(sides['B']) / min(sides['A-mem']):.2f}x")
    print("stages of B's last run: " + ", ".join(f"{s.name} {s.duration_s:.2f}s" for s in last_b.stages)
          + f"; held-out roc_auc: bare {auc:.4f} (in memory {auc_in_memory:.4f}), "
          f"pipeline {last_b.validation['metrics']['roc_auc']:.4f}")
    if server:
        counts = sorted({len(r) for r in run_requests})
        print(f"requests to the tracking server per pipeline run: {' to '.join(map(str, counts))} "
              f"({summary(run_requests[-1])})")
        print(f"requests for one publish + promote alone: {len(publish_requests)} ({summary(publish_requests)})")
        print(f"requests per idle cycle (aliases of 1 model): {len(idle_requests)} ({summary(idle_requests)})")
    bare_start, help_start = min(timings["python -c pass"]), min(timings["mlops-bot --help"])
    extra = help_start - bare_start
    print(f"start-up, best of {args.startup_repeat} fresh processes each: python -c pass {bare_start * 1000:.0f} ms, "
          f"mlops-bot --help {help_start * 1000:.0f} ms, extra {extra * 1000:.0f} ms "
          f"(goal <= 300 ms: {'met' if extra <= 0.3 else 'NOT met'}); mlflow imported by --help: "
          f"{'yes' if help_imports_mlflow else 'no'}")


if __name__ == "__main__":
    main()
