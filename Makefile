# vselect-jax: `make demo` runs the main job, `make test` the tests.
# Both build .venv on a fresh machine (CPU JAX; torch CPU for parity tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch; a looser spec can pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

# The LLaVA-OneVision-1.5 oracle: PyTorch code from lmms-engine that needs
# transformers 4.x, so it gets its own venv, run in a subprocess by the tests.
OV_VENV := .venv-ov
OV_PY := $(OV_VENV)/bin/python
LMMS_ENGINE_SPEC ?= lmms-engine==0.1.4

.PHONY: demo demo-anneal demo-world1 pipeline-demo test bench venv venv-ov clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

venv: $(VENV)/.installed

$(OV_VENV)/.installed: tests/ov_oracle_requirements.txt
	test -x $(OV_PY) || $(PYTHON) -m venv $(OV_VENV)
	$(OV_PY) -m pip install -q --upgrade pip
	$(OV_PY) -m pip install -q -r tests/ov_oracle_requirements.txt
	$(OV_PY) -m pip install -q --no-deps "$(LMMS_ENGINE_SPEC)"
	touch $@

venv-ov: $(OV_VENV)/.installed

# The paper's claims on a synthetic world built to test them (issue 19):
# a small Qwen2.5-VL trained from scratch (stage 1: three phases, ~30 min the
# first time, then cached), the scorer at 0.2, Dynamic-Qwen, and every method
# at five budgets on 400 held-out questions, per question kind.
demo: $(VENV)/.installed
	$(PY) -m vselect_jax.world2_demo --workdir demo_out/world2 --limit 400

# The annealing grid on the same world (12 scorer runs, ~1 h on 2 cores).
demo-anneal: $(VENV)/.installed
	$(PY) -m vselect_jax.world2_demo --workdir demo_out/world2 --no-sweep \
	  --anneal --selector-steps 100 --anneal-every 25 --anneal-limit 25

# The first synthetic world: the machinery in miniature (~15 min).
demo-world1: $(VENV)/.installed
	$(PY) -m vselect_jax.world_demo --workdir demo_out

# Convert -> forward at budgets -> a few scorer steps, in about a minute.
pipeline-demo: $(VENV)/.installed
	$(PY) -m vselect_jax.demo --workdir demo_out/pipeline

test: $(VENV)/.installed $(OV_VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

bench: $(VENV)/.installed
	$(PY) bench/forward.py

clean:
	rm -rf demo_out .pytest_cache
