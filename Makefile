# Two commands set up a fresh machine: `make demo` and `make test` (see README).
PY ?= python3
PIP ?= $(PY) -m pip
SAMPLE_OUT ?= /tmp/pass-wds-demo
TRAIN_OUT ?= /tmp/pass-wds-ssl

.PHONY: install install-test demo demo-train test lint typecheck bench clean

install:
	$(PIP) install -q -c constraints.txt -e .

install-test:
	$(PIP) install -q -c constraints.txt -e '.[test]'

demo: install
	make-shards --config configs/sample.yaml --output $(SAMPLE_OUT) --overwrite
	pass-wds verify $(SAMPLE_OUT)
	pass-wds inspect $(SAMPLE_OUT)

demo-train: demo
	$(PY) scripts/train_ssl.py --nproc-per-node 2 --config configs/train_ssl.yaml \
		--source $(SAMPLE_OUT)/index.json --output-dir $(TRAIN_OUT)

lint:
	ruff check pass_wds tests scripts benchmarks
	ruff format --check pass_wds tests scripts benchmarks

typecheck:
	mypy

test: install-test lint typecheck
	$(PY) -m pytest -q tests

bench:
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
