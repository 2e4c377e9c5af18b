# The two commands a newcomer needs (see README.md): `make demo` and `make test`.
.PHONY: setup demo test lint test-slow bench

setup:
	@bash deploy/dev-setup.sh

demo: setup
	.venv/bin/relay demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# pytest exits 5 when it collects nothing, which make treats as a failure: CI never passes vacuously.
# Two workers, one test file each at a time: the tests mostly wait on real processes, so this
# halves the wall time on two cores. A short base directory keeps the nodes' Unix socket paths
# under the 108-byte limit.
test: lint
	.venv/bin/python -m pytest -q -m "not slow" -n 2 --dist loadfile --basetemp=/tmp/relay-tests-$$(id -u)

test-slow: setup
	.venv/bin/python -m pytest -q -m slow

bench: setup
	.venv/bin/python bench/envelope.py
