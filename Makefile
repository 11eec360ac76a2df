# One command surface. Every target bootstraps what it needs (scripts/bootstrap).
.PHONY: run test lint typecheck check bench migrate fmt

VENV := .venv/bin

run:  ## install and start Tidings on the embedded SQLite database
	@scripts/bootstrap
	$(VENV)/tidings serve

test:  ## install and run the whole suite (SQLite and PostgreSQL)
	@scripts/bootstrap --dev
	$(VENV)/pytest $(PYTEST_ARGS)

lint:
	@scripts/bootstrap --dev
	$(VENV)/ruff check src tests bench
	$(VENV)/ruff format --check src tests bench

fmt:
	@scripts/bootstrap --dev
	$(VENV)/ruff check --fix src tests bench
	$(VENV)/ruff format src tests bench

typecheck:
	@scripts/bootstrap --dev
	$(VENV)/mypy

check: lint typecheck test

bench:  ## run the benchmarks and rewrite bench/RESULTS.md
	@scripts/bootstrap --dev
	$(VENV)/python -m bench.run $(BENCH_ARGS)

migrate:
	@scripts/bootstrap
	$(VENV)/tidings migrate
