# The two entry points of the README. Each sets everything up on a fresh machine first.
.PHONY: demo test setup-demo setup-test docs lint

demo: setup-demo
	.venv/bin/diffst demo --out diffst_output --overwrite

test: setup-test
	.venv/bin/python -m pytest -n 2 --dist loadfile -q
	PYTHON=.venv/bin/python bash docs/build.sh

setup-demo:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh test,doc

docs: setup-test
	PYTHON=.venv/bin/python bash docs/build.sh

lint:
	.venv/bin/ruff check src tests benchmarks
