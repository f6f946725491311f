# gptlab — `make help` lists the targets.
# torch is installed first and pinned, so pip never swaps in a multi-GB CUDA build by accident.
# On a GPU machine: make train TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url <your CUDA wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# hf (transformers), mlflow (which brings scipy) and wandb are left out by default: torchmetrics, which
# Lightning imports, imports transformers and scipy whenever they are installed, seconds on every start
# (benchmarks/MEASUREMENTS.md, "Start-up"). `zh` is jieba (Chinese word segmentation, imported only when
# used); `baseline` is scikit-learn for the baseline beside every classification run (it brings scipy too).
EXTRAS ?= dev,sweep,zh,baseline
# make test installs every extra, so that no test is skipped for a missing package.
TEST_EXTRAS ?= dev,sweep,zh,baseline,hf,mlflow,wandb
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.DEFAULT_GOAL := help
.PHONY: help install train test test-all bench bench-e2e tensorboard lint format clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[$(TEST_EXTRAS)]"
	touch $(TEST_STAMP)

install: $(STAMP) ## create .venv and install gptlab (again only when pyproject.toml changed)

train: $(STAMP) ## pretrain the default experiment on the bundled Shakespeare (args: ARGS="key=value ...")
	$(BIN)/gptlab-train $(ARGS)

test: $(TEST_STAMP) ## the test suite without the tests marked slow (what CI runs; about 9 min on 2 cores)
	$(BIN)/python -m pytest $(ARGS)

test-all: $(TEST_STAMP) ## every test, the slow end-to-end ones too (about 25 min on 2 cores)
	$(BIN)/python -m pytest -m "slow or not slow" $(ARGS)

bench: $(STAMP) ## speed benchmarks, each side by side in one run (tables; JSON in benchmarks/results/)
	$(BIN)/python benchmarks/train_speed.py $(ARGS)
	$(BIN)/python benchmarks/generation_speed.py
	$(BIN)/python benchmarks/backbone_speed.py
	$(BIN)/python benchmarks/data_pipeline.py

bench-e2e: $(STAMP) ## make train's whole process vs a nanoGPT-like loop, A B A B (args: ARGS="--pairs 1")
	$(BIN)/python benchmarks/end_to_end.py $(ARGS)

tensorboard: $(STAMP) ## serve every run (logs/tensorboard/) at http://localhost:6006
	$(BIN)/tensorboard --logdir logs/tensorboard --port 6006

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP) ## ruff fix and format
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean: ## remove caches and run logs (keeps .venv and data)
	rm -rf logs/* data/.cache .pytest_cache .ruff_cache benchmarks/results
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
	touch logs/.gitkeep

# `make austen`: its three runs go to fixed folders, so each step finds what the one before wrote.
AUSTEN_DIR ?= logs/austen
# Pretraining for fine-tuning: a block of 256 characters sees most of a paragraph (median 466).
AUSTEN_PRETRAIN ?= model.backbone.block_size=256 trainer.max_steps=3000
.PHONY: austen

austen: $(STAMP) ## pretrain on Shakespeare -> fine-tune on Austen novels -> test (replaces logs/austen/)
	rm -rf $(AUSTEN_DIR)
	$(BIN)/gptlab-train experiment=shakespeare_char $(AUSTEN_PRETRAIN) test=false hydra.run.dir=$(AUSTEN_DIR)/pretrain
	$(BIN)/gptlab-train experiment=austen_finetune model.pretrained=$(AUSTEN_DIR)/pretrain/checkpoints/last.ckpt \
		callbacks.model_checkpoint.filename=best test=false hydra.run.dir=$(AUSTEN_DIR)/finetune $(ARGS)
	$(BIN)/gptlab-eval ckpt_path=$(AUSTEN_DIR)/finetune/checkpoints/best.ckpt hydra.run.dir=$(AUSTEN_DIR)/test
