# The two commands of the README: `make report` (main job on the mock survey) and `make test`.
# Both create .venv on first use and install the project (and its pinned tools) into it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= quick
OUT ?= reports/$(PROFILE)
export MPLBACKEND := Agg
export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONHASHSEED := 0

.PHONY: install report test bench

$(STAMP): settings.ini setup.py pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(PY) -c "from spectral_nb.libraries import star_library, ssp_library; star_library(); ssp_library()"  # observed spectral libraries (sdss-mangadap wheel, read as data), cached
	touch $(STAMP)

install: $(STAMP)

report: $(STAMP)
	$(VENV)/bin/spectral-nb reproduce --profile $(PROFILE) --source mock --out $(OUT)

test: $(STAMP)
	$(VENV)/bin/ruff format --check nbs  # notebooks formatted (line length 120, one statement a line): `ruff format nbs` fixes them
	cd nbs && ../$(VENV)/bin/nbdev_test --n_workers 2
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests  # two workers, a test file each at a time; conftest puts the end-to-end smoke chain (the longest file) first

bench: $(STAMP)
	$(PY) benchmarks/bench_mock.py --n 10000
