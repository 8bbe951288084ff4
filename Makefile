# The workbook's commands. `make all` runs every notebook; `make test` checks everything.
# PROFILE picks the size of the run: smoke (seconds, CI), default (a laptop), rehearsal (the real
# download and checkpoint path, offline), mapillary (free real photos, a GPU), full (the report, a GPU).

PROFILE ?= default
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BUILD := build/$(PROFILE)

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
EXECUTED := $(patsubst notebooks/%,$(BUILD)/notebooks/%,$(NOTEBOOKS))
HELPERS := $(wildcard helpers/*.py helpers/report/*.py)
# the committed checkpoint that default and rehearsal fine-tune (make pretrained rewrites it)
PRETRAINED := $(wildcard pretrained/*/*)
DATA_FILES := data/dagi_kommuner.geojson data/dagi_regioner.geojson \
              data/dagi_postnumre.geojson data/report_3-distance-matrix.ipynb

.PHONY: setup data all test test-slow lab lint strip bench bench-gpu slides book assignments grade lab-archive \
        pretrained clean distclean help
.DELETE_ON_ERROR:

help:
	@echo "make all      run the notebooks in order (PROFILE=$(PROFILE)) into $(BUILD)/"
	@echo "make test     unit tests; every notebook in the smoke profile (05-07 on JAX), the book, grading"
	@echo "make test-slow  every notebook in the rehearsal profile; every worked solution run (CI runs both)"
	@echo "make lab      open the notebooks in JupyterLab"
	@echo "make data     download the inputs into data/ (checked by SHA-256)"
	@echo "make lint     ruff on helpers, tests and notebooks; notebook house rules"
	@echo "make bench    speed benchmarks, written to build/bench.md"
	@echo "make slides   a PDF deck per notebook, offline, into $(BUILD)/slides/ (after make all)"
	@echo "make book     the executed notebooks as a static site, into $(BUILD)/site/ (after make all)"
	@echo "make assignments  student notebooks and otter-grader autograders, into build/assignments/"
	@echo "make grade SUBMISSIONS=folder  grade folder/<student>/<NN_name>.ipynb into one grades.csv"
	@echo "make lab-archive  pack $(BUILD) for a lab on Colab or Kaggle (docs/teaching.md)"
	@echo "make bench-gpu  GPU speed (precision, XLA) and images/s per number of GPUs, into build/bench-gpu.md"
	@echo "make pretrained  pretrain the workbook's small ViT again into pretrained/ (committed; make all never does)"
	@echo "make clean    remove build/ (distclean: also .venv)"

# A fresh clone needs no separate step: every target below depends on this one.
setup: $(INSTALLED)
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

data: $(DATA_FILES)
$(DATA_FILES): | $(INSTALLED)
	$(PY) -m helpers.datasets $(notdir $@)

all: $(EXECUTED) $(BUILD)/report.html
	@echo "Executed notebooks, figures, maps, tables and models are in $(BUILD)/"
	@echo "The report: $(BUILD)/report.html (and report.pdf)"

# Notebook 10 writes the report; written again after the last notebook, it also holds the
# results of the notebooks after 10 (beyond the report, future work).
$(BUILD)/report.html: $(EXECUTED) $(HELPERS) $(wildcard helpers/report/*.py helpers/templates/*)
	@$(PY) -m helpers.report --profile $(PROFILE)

# Each notebook reruns when it, the helpers or the notebook before it changed.
$(BUILD)/notebooks/%.ipynb: notebooks/%.ipynb $(HELPERS) $(PRETRAINED) $(INSTALLED) | $(DATA_FILES)
	@$(PY) -m helpers.notebooks run $< --profile $(PROFILE)
$(foreach i,$(shell seq 2 $(words $(EXECUTED))),\
  $(eval $(word $(i),$(EXECUTED)): $(word $(shell expr $(i) - 1),$(EXECUTED))))

# Two workers, each test module whole and in order on one of them: the smoke notebook series on
# one, the unit tests fill in. TEST_WORKERS=0 runs in one process. `make test` leaves out the
# tests marked slow (the rehearsal series, the worked solutions' runs), which `make test-slow`
# runs side by side, one series per worker; CI (.ci/run) runs both, plain `pytest` everything.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=12
test: $(INSTALLED) $(DATA_FILES)
	$(PYTEST) -m "not slow"

test-slow: $(INSTALLED) $(DATA_FILES)
	$(PYTEST) -m slow

lab: $(INSTALLED) $(DATA_FILES)
	$(VENV)/bin/jupyter lab notebooks/

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(PY) -m helpers.notebooks check

strip: $(INSTALLED)
	$(PY) -m helpers.notebooks strip

bench: $(INSTALLED) $(DATA_FILES)
	$(PY) bench/run.py --output build/bench.md

bench-gpu: $(INSTALLED) $(DATA_FILES)
	$(PY) bench/gpu.py --output build/bench-gpu.md
	$(PY) bench/gpu_devices.py --output build/bench-gpu.md --append

# The course as a website from the executed notebooks of $(BUILD); nothing is run again, so it
# depends on no notebook: run make all first (it says so if a chapter is missing).
book: $(INSTALLED)
	$(PY) -m helpers.book --profile $(PROFILE)

# otter-grader comes with the `grading` extra (in `dev` too); a venv made without it gets it here.
GRADING := $(VENV)/.grading
$(GRADING): $(INSTALLED)
	$(PY) -c "import otter" 2>/dev/null || $(VENV)/bin/pip install --quiet -e ".[grading]"
	touch $@

assignments: $(GRADING)
	$(PY) -m helpers.grading assign --out build/assignments

SUBMISSIONS ?=
grade: $(GRADING)
	@test -n "$(SUBMISSIONS)" || { echo "Say where the submissions are: make grade SUBMISSIONS=folder"; exit 2; }
	$(PY) -m helpers.grading grade "$(SUBMISSIONS)" --out build/grades.csv

lab-archive: $(INSTALLED)
	$(PY) -m helpers.lab pack --profile $(PROFILE)

# One PDF per notebook from its own key points and the figures of $(BUILD) (docs/teaching.md).
slides: $(INSTALLED)
	$(PY) -m helpers.slides --profile $(PROFILE)

# The small ViT that default and rehearsal fine-tune: masked-patch reconstruction on synthetic
# scenes (helpers/pretrain.py, about 10 min on 2 cores). Its result is committed in pretrained/,
# so nothing depends on this target: run it only to change or check the recipe.
pretrained: $(INSTALLED) $(DATA_FILES)
	$(PY) -m helpers.pretrain

clean:
	rm -rf build

distclean: clean
	rm -rf $(VENV)
