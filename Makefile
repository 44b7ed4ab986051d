# Two commands set up a fresh machine: `make demo` and `make test` (see README).
PY ?= python3
PIP ?= $(PY) -m pip
SAMPLE_OUT ?= /tmp/pass-wds-demo

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
	cd /tmp && torchrun --nproc_per_node 2 $(CURDIR)/scripts/train_ssl.py --config $(CURDIR)/configs/train_ssl.yaml \
		--source $(SAMPLE_OUT)/index.json --batch-size 8 --max-steps 20 --checkpoint /tmp/pass-wds-ssl.pt --no-resume

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
