# The two commands of the README: `make demo` and `make test`.
.PHONY: setup demo test test-only lint

setup:
	bash .ci/setup

demo: setup
	.venv/bin/modelbus demo

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy schemas workers

test: setup lint test-only

test-only:
	.venv/bin/python -m pytest
