"""How long the `bulkproc` command takes to start, and whether it adds anything to the service's start.

1. Wall time of a whole run, RUNS runs of each command, interleaved round-robin (so a burst of load
   on this shared machine falls on every command alike), the median in ms and as a ratio to a bare
   interpreter (`python -c pass`), with `python -c "import requests"` (the HTTP library the command
   needs anyway) as the second reference:
   - `python -m bulkproc.cli --help`
   - `python -m bulkproc.cli --url URL status ID --json` against a running service (gunicorn, 2
     workers, as the harness starts it; ID a completed batch): the start plus one status read
   - `.venv/bin/bulkproc status ID --json`, the console script, when `make install` has put it there
2. The service's side: in a process that boots the app as gunicorn's workers do (`import wsgi`,
   which runs create_app), which of click, rich and bulkproc.cli are loaded, and by whom (from
   `-X importtime`); the service's import time alone and with the CLI imported after it (what the
   CLI would add if the service loaded it), medians of IMPORT_RUNS.

Run: .venv/bin/python bench/cli_start.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from _harness import ROOT, Service, header, hospitals_csv, line, median, upload, verdict

from bulkproc.simulator import create_simulator, serve

RUNS = 15
IMPORT_RUNS = 7
PY = sys.executable
CONSOLE_SCRIPT = Path(PY).parent / "bulkproc"
# The service must not load these (Flask itself loads click: reported, not counted against the CLI).
NOT_IN_SERVICE = ("rich", "bulkproc.cli", "typer")

PROBE = """
import json, sys
import wsgi
loaded = lambda name: any(m == name or m.startswith(name + ".") for m in sys.modules)
print(json.dumps({name: loaded(name) for name in ("click", "rich", "typer", "bulkproc.cli", "flask")}))
"""


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This checkout first on the path, so every subprocess runs its code."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    return time.perf_counter() - started, done.returncode


def timed(commands: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, tuple[float, set[int]]]:
    """Median seconds and the exit statuses of each command, `runs` rounds interleaved, one warm-up round first."""
    times: dict[str, list[float]] = {label: [] for label in commands}
    codes: dict[str, set[int]] = {label: set() for label in commands}
    for round_ in range(runs + 1):
        for label, command in commands.items():
            seconds, code = run_once(command, env)
            codes[label].add(code)
            if round_:  # round 0 fills the page cache and the .pyc files
                times[label].append(seconds)
    return {label: (median(times[label]), codes[label]) for label in commands}


def importtime_tree(code: str, env: dict[str, str], args: list[str] | None = None) -> list[tuple[int, str, int, int]]:
    """(depth, module, self µs, cumulative µs) of every import `python -X importtime -c code` (or `python
    -X importtime ARGS`) made, in its order."""
    done = subprocess.run([PY, "-X", "importtime", *(args or ["-c", code])], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    tree = []
    for row in done.stderr.splitlines():
        if not row.startswith("import time:") or "self [us]" in row:
            continue
        own, cumulative, name = row.removeprefix("import time:").split("|")
        tree.append((len(name) - len(name.lstrip()), name.strip(), int(own), int(cumulative)))
    return tree


def importer_chain(tree: list[tuple[int, str, int, int]], module: str) -> str:
    """Who imported `module` first: its parents up to the top, from the post-order importtime listing."""
    for index, (depth, name, _, _) in enumerate(tree):
        if name == module:
            chain = [name]
            for up_depth, up_name, _, _ in tree[index + 1:]:
                if up_depth < depth:
                    chain.append(up_name)
                    depth = up_depth
            return " <- ".join(chain)
    return "not loaded"


def cumulative_ms(tree: list[tuple[int, str, int, int]], module: str) -> float:
    return next((c for _, name, _, c in tree if name == module), 0) / 1000


def top_level_ms(tree: list[tuple[int, str, int, int]]) -> float:
    """All the imports' time: the sum of the top-level entries' cumulative times."""
    return sum(c for depth, _, _, c in tree if depth == min(d for d, _, _, _ in tree)) / 1000


def part1(service: Service, batch_id: str, env: dict[str, str]) -> None:
    header(f"part 1: the command's start, median of {RUNS} runs each (interleaved, after one warm-up round)")
    commands = {
        "python -c pass": [PY, "-c", "pass"],
        'python -c "import requests"': [PY, "-c", "import requests"],
        "-m bulkproc.cli --help": [PY, "-m", "bulkproc.cli", "--help"],
        "-m bulkproc.cli status ID --json": [PY, "-m", "bulkproc.cli", "--url", service.url, "status",
                                                    batch_id, "--json"],
    }
    if CONSOLE_SCRIPT.exists():
        commands["bulkproc status ID --json"] = [str(CONSOLE_SCRIPT), "--url", service.url, "status",
                                                           batch_id, "--json"]
    results = timed(commands, RUNS, env)
    bare, requests_only = results["python -c pass"][0], results['python -c "import requests"'][0]
    for label, (seconds, codes) in results.items():
        line(label, f"{seconds * 1000:7.1f} ms  {seconds / bare:5.2f}x python -c pass  "
                    f"{seconds / requests_only:5.2f}x import requests  (exit {sorted(codes)})")
    if not CONSOLE_SCRIPT.exists():
        line("console script", f"{CONSOLE_SCRIPT} not installed (make install puts it there); "
                               "`python -m bulkproc.cli` runs the same main")
    status_read = median(status_reads(service, batch_id))
    own = results["-m bulkproc.cli status ID --json"][0]
    line("status ID --json minus --help", f"{(own - results['-m bulkproc.cli --help'][0]) * 1000:.1f} ms "
                                          f"(one status read alone, client-side: {status_read * 1000:.1f} ms)")
    for label, args in (("--help", ["--help"]), ("status ID --json", ["--url", service.url, "status", batch_id,
                                                                      "--json"])):
        tree = importtime_tree("", env, ["-m", "bulkproc.cli", *args])
        names = {name for _, name, _, _ in tree}
        line(f"{label} loads", ", ".join(
            f"{top} {f'{cumulative_ms(tree, top):.1f} ms' if top in names else 'no'}"
            for top in ("click", "requests", "rich", "flask", "sqlalchemy")) + "  (-X importtime, cumulative)")
    line("status exit codes", f"{sorted(results['-m bulkproc.cli status ID --json'][1])}  (target [0]: "
                              f"the batch completed)  {verdict(results['-m bulkproc.cli status ID --json'][1] == {0})}")


def status_reads(service: Service, batch_id: str, reads: int = 10) -> list[float]:
    times = []
    with requests.Session() as http:
        for _ in range(reads):
            started = time.perf_counter()
            http.get(f"{service.url}/hospitals/bulk/{batch_id}", timeout=10).raise_for_status()
            times.append(time.perf_counter() - started)
    return times


def part2(env: dict[str, str]) -> None:
    header(f"part 2: the service's start with and without the CLI (median of {IMPORT_RUNS} runs)")
    done = subprocess.run([PY, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    tree = importtime_tree("import wsgi", env)
    line("after `import wsgi` (create_app)", ", ".join(f"{name} {'loaded' if on else 'not loaded'}"
                                                      for name, on in loaded.items()))
    clean = not any(loaded[name] for name in NOT_IN_SERVICE)
    line("service loads no CLI module", f"rich, typer, bulkproc.cli absent  {verdict(clean)}")
    line("click is loaded by", f"{importer_chain(tree, 'click')}  ({cumulative_ms(tree, 'click'):.1f} ms of "
                               f"{cumulative_ms(tree, 'flask'):.1f} ms for flask: Flask's own dependency)")

    service_only, with_cli, cli_after, cli_alone = [], [], [], []
    for _ in range(IMPORT_RUNS):
        service_only.append(top_level_ms(importtime_tree("import bulkproc.runtime, bulkproc.web", env)))
        tree = importtime_tree("import bulkproc.runtime, bulkproc.web, bulkproc.cli.main", env)
        with_cli.append(top_level_ms(tree))
        cli_after.append(cumulative_ms(tree, "bulkproc.cli.main"))
        cli_alone.append(cumulative_ms(importtime_tree("import bulkproc.cli.main", env), "bulkproc.cli.main"))
    boot = timed({"import wsgi": [PY, "-c", "import wsgi"], "pass": [PY, "-c", "pass"]}, IMPORT_RUNS, env)
    line("service imports (runtime, web)", f"{median(service_only):.1f} ms (-X importtime, all modules)")
    line("the same, then bulkproc.cli.main", f"{median(with_cli):.1f} ms; the CLI's share "
                                              f"{median(cli_after):.1f} ms = {median(cli_after) / median(service_only):.3f}x "
                                              "the service's imports, paid only if the service imported it (it does not)")
    line("bulkproc.cli.main alone", f"{median(cli_alone):.1f} ms (click included: what `bulkproc` imports)")
    line("service boot (python -c 'import wsgi')", f"{boot['import wsgi'][0] * 1000:.1f} ms wall = "
                                                  f"{boot['import wsgi'][0] / boot['pass'][0]:.1f}x python -c pass "
                                                  "(create_app included: store, threads)")


def main() -> int:
    header("cli_start: the bulkproc command's start time against a running service (gunicorn, 2 workers), "
           "simulator delay 0.05 s")
    up = serve(create_simulator(delay=0.05, create_limit=0, other_limit=0))
    service = Service(up.url, workers=2, env={"BULKPROC_CREATE_RATE": "0"})
    with tempfile.TemporaryDirectory(prefix="bulkproc-cli-start-") as folder:
        env = environment()
        boot_env = environment({"DATABASE_URL": f"sqlite:///{folder}/jobs.sqlite3",
                                "HOSPITAL_API_BASE_URL": up.url})
        try:
            with service:
                service.wait_healthy()
                with requests.Session() as http:
                    batch_id = upload(http, service.url, hospitals_csv(2, "CliStart")).json()["batch_id"]
                part1(service, batch_id, env)
                part2(boot_env)
        finally:
            up.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
