# fame — recipes. `just help` lists them with one line each.

set shell := ["bash", "-euo", "pipefail", "-c"]

python := env_var_or_default("FAME_PYTHON", "python3")

# List every recipe with what it does
help:
    @just --list --unsorted

# Run the embedded example: agents inside your own trio.run, no network
demo:
    {{python}} examples/embedded.py

# Run the whole test suite (real processes, sockets and SQLCipher files)
test *args:
    {{python}} -m pytest -q {{args}}

# Lint: ruff check, ruff format check and mypy, all must be clean
lint:
    {{python}} -m ruff check .
    {{python}} -m ruff format --check .
    {{python}} -m mypy

# Run every benchmark and print figures with their same-run baselines
bench:
    {{python}} bench/bench_runtime.py
    {{python}} bench/bench_storage.py
    {{python}} bench/bench_fabric.py
