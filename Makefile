# Two commands set up a fresh machine: `make demo` and `make test` (see README).
PY ?= python3
PIP ?= $(PY) -m pip
SAMPLE_OUT ?= /tmp/pass-wds-demo
TRAIN_OUT ?= /tmp/pass-wds-ssl

.PHONY: install install-test demo demo-train test test-quick lint typecheck bench clean check-torch-range

# keeps an installed torch (and gives it its own torchvision: scripts/keep_torch.py, docs/install.md);
# install-test pins CI's pair from constraints.txt instead
install:
	@mkdir -p build && $(PY) scripts/keep_torch.py > build/keep-torch.txt
	$(PIP) install -q -c build/keep-torch.txt -e .

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

# The full suite (CI). Tests marked `corpus` also use ../shared/corpus (or $$PASS_WDS_CORPUS) and skip without it.
test: install-test lint typecheck
	$(PY) -m pytest -q tests

# The quick subset: unit modules only (tests/conftest.py QUICK_MODULES), under a minute.
test-quick: install-test
	$(PY) -m pytest -q -m quick tests

bench:
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	$(PY) benchmarks/run_all.py

# the tested torch/torchvision range, end to end in throwaway environments (downloads the pairs it lacks)
check-torch-range:
	$(PY) scripts/check_torch_range.py

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
