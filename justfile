# fame — recipes. `just help` lists them with one line each.
# Services run from this directory: conf/ (settings, secrets), data/ (stores), run/ (pids, logs);
# the node imports the agents conf/agent.env names from it (agents/ is the example project).
# Environment variables override conf/*.env, e.g. `FAME_SENTINEL_PORT=8100 just up`.

set shell := ["bash", "-euo", "pipefail", "-c"]

python := env_var_or_default("FAME_PYTHON", "python3")
fame := python + " -m fame._cli.fame"

# List every recipe with what it does
help:
    @just --justfile {{justfile()}} --list --unsorted

# Write what the project lacks: conf/*.env, conf/secrets.env (mode 0600), a starter agent
[no-exit-message]
init:
    @{{fame}} init

# Start the sentinel and the agents' node in the background; wait until every agent answers
[no-exit-message]
up:
    @{{fame}} up

alias start := up

# Stop the services gracefully (stores closed cleanly); kill only our own pids on timeout
[no-exit-message]
stop:
    @{{fame}} stop

alias down := stop

# Show whether the sentinel and the storage agent are running
[no-exit-message]
[positional-arguments]
status *args:
    @{{fame}} status "$@"

# Print the end of the sentinel's and the agent's logs (run/*.log)
[no-exit-message]
[positional-arguments]
logs *args:
    @{{fame}} logs "$@"

# Run the client: store, retrieve and list values through the sentinel
[no-exit-message]
[positional-arguments]
run *args:
    @{{python}} -m fame._cli.client "$@"

# Run the client printing every envelope sent and received
[no-exit-message]
[positional-arguments]
run-verbose *args:
    @{{python}} -m fame._cli.client --verbose "$@"

# Check the install (imports, console scripts) and byte-compile the sources
[no-exit-message]
build:
    @{{python}} -c "import fame, fame._cli.fame, fame._cli.client, agents.storage_agent, sqlcipher3, trio_websocket; print('fame', fame.__version__, 'imports ok')"
    @command -v fame >/dev/null && command -v fame-client >/dev/null && echo "console scripts ok: $(command -v fame) $(command -v fame-client)" || { echo "console scripts missing: run python3 -m pip install -e '.[dev]'"; exit 1; }
    @{{python}} -m compileall -q fame agents bin/fame bin/fame-client && echo "byte-compiled fame/ agents/ bin/"

# Stop the services, then remove data/, conf/secrets.env and run/: lists them and asks first (--yes: no question)
[no-exit-message]
[positional-arguments]
clean *args:
    @{{fame}} clean "$@"

# Build the wheel and the sdist into dist/ (the distribution is fame-actors; `import fame`)
dist:
    {{python}} -m build --outdir dist .

# Run the embedded example: agents inside your own trio.run, no network
demo:
    {{python}} examples/embedded.py

# Run the whole test suite on every core (real processes, sockets and SQLCipher files)
[positional-arguments]
test *args:
    {{python}} -m pytest -q -n auto "$@"

# Lint: ruff check, ruff format check, mypy, and mypy --strict on the typed user example
lint:
    {{python}} -m ruff check .
    {{python}} -m ruff format --check .
    {{python}} -m mypy
    {{python}} -m mypy --strict examples/typed_client.py

# Build the user guide and the API reference into site/ (mkdocs --strict: a broken reference or link fails)
[positional-arguments]
docs *args:
    {{python}} -m mkdocs build --strict --site-dir site "$@"

# Torture run: kill -9 the storage agent and the sentinel under load for many cycles, print cycles/acknowledged/verified/lost
[positional-arguments]
soak *args:
    {{python}} tests/reliability/soak.py "$@"

# Issue 12's attacks at full size: the legitimate client's idle vs attacked p99, peak RSS per attack
[positional-arguments]
attack *args:
    {{python}} tests/reliability/attack_p99.py "$@"

# Issue 17's study: PostgreSQL vs NATS for the shared state of several sentinels
[positional-arguments]
study-mesh *args:
    {{python}} bench/study_sentinel_mesh.py "$@"

# Run every benchmark and print figures with their same-run baselines
bench:
    {{python}} bench/bench_runtime.py
    {{python}} bench/bench_storage.py
    {{python}} bench/bench_fabric.py
    {{python}} bench/bench_e2e.py
    {{python}} bench/bench_startup.py
    {{python}} bench/bench_delivery.py
    {{python}} bench/bench_ticks.py
    {{python}} bench/bench_backup.py
    {{python}} bench/bench_rekey.py
