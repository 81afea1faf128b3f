# Two commands on a fresh machine: `make study` (the whole study) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
PRESET ?= default
# make study reads back every cached step (data/results/cache) whose key matches (code version,
# checkpoint, parameters) and computes the rest; make study-full recomputes everything (RECOMPUTE=1)
RECOMPUTE ?= 0
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: env data checkpoint study study-full test test-browser lab bench pretrain protocol protocol-v2 clean

env: .venv/.installed
.venv/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@# outputs never enter git: JupyterLab's autosave writes them, the filter strips them on add
	-@git rev-parse --git-dir >/dev/null 2>&1 && .venv/bin/nbstripout --install --attributes .gitattributes
	touch $@

# Fashion-MNIST: Debian's package, installed by apt where none of FASHION_DIRS holds it. apt waits up
# to 10 min for another apt process to release its lock; if it still fails (offline, no sudo), make
# stops with what to do, and tries no download (torchvision's downloader needs a network too).
# Without apt, load_dataset's downloader is the only way, and says what to copy where if it fails.
FASHION_DIRS ?= /usr/share/datasets/fashion-mnist data/fashion-mnist data/FashionMNIST/raw
APT_GET := $(SUDO) apt-get -o DPkg::Lock::Timeout=600
data: env
	@found=; for d in $(FASHION_DIRS); do [ -d "$$d" ] && found=1; done; \
	if [ -z "$$found" ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist (waiting up to 10 min for apt's lock)"; \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq dataset-fashion-mnist || { \
	    echo "make data: apt-get could not install dataset-fashion-mnist (offline? no sudo? lock held over 10 min?)." >&2; \
	    echo "  Run 'sudo apt-get install dataset-fashion-mnist' when it can, or copy the four Fashion-MNIST" >&2; \
	    echo "  idx files (train-images-idx3-ubyte.gz, ...) into data/fashion-mnist/, then 'make data' again." >&2; \
	    exit 1; }; \
	elif [ -z "$$found" ]; then echo "no apt-get: torchvision's downloader fetches Fashion-MNIST into data/ (needs a network)"; fi
	@$(PY) -c "import sys; sys.excepthook = lambda t, e, tb: print('make data:', e, file=sys.stderr) if t is ValueError \
	  else sys.__excepthook__(t, e, tb); import blocksparse_utils as b; [b.load_dataset(split=s) for s in ('train', 'test')]; \
	  print('Fashion-MNIST ready')"

checkpoint: env
	@$(PY) -c "import blocksparse_utils as b; b.load_pretrained(); print('checkpoint ok (sha256 verified):', b.checkpoint_path())" \
	  || { echo "the shipped checkpoint is missing or corrupt: 'git checkout data/' or 'make pretrain'"; exit 1; }

# The default run also puts notebook 07's record into the README's results block and docs/results.md.
# PRESET=cifar100: the original study's own table (CIFAR-100, its hub ResNet-18, ratios 1.0-0.05,
# B=4, 2 bits, the three modes, without and with fine-tuning per ratio) with real streams; it
# needs a network (or the files it names) for the dataset and the checkpoint.
FINETUNE_STEPS ?= 1000
study: data checkpoint
ifeq ($(PRESET),cifar100)
	for m in channel-wise region-wise global; do \
	  $(PY) blocksparse_utils.py --dataset cifar100 --mode $$m --block-size 4 --ratios 1.0 0.5 0.3 0.1 0.05 \
	    --bits 2 --finetune-steps $(FINETUNE_STEPS) || exit 1; done
else
	BSU_RECOMPUTE=$(RECOMPUTE) $(PY) blocksparse_utils.py notebooks --preset $(PRESET)
	@if [ "$(PRESET)" = default ]; then $(PY) -m blocksparse.report README.md docs/results.md; fi
endif

study-full:
	$(MAKE) study RECOMPUTE=1

test: data
	$(PY) -m pytest -m "not browser"

test-browser: env
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	$(PY) -m pytest -m browser

lab: env
	.venv/bin/jupyter lab notebooks/

# the protocol's runs, resumable: every step `protocol plan` lists, in order (hours on 2 CPU cores each)
protocol: data checkpoint
	$(PY) blocksparse_utils.py protocol next --max-steps 1000
	$(PY) blocksparse_utils.py protocol answer

# protocol v2's runs, resumable, layer3 first: each split's walks with their confirmations, WebP with a
# fine-tuned classifier after layer3, then the budget's sensitivity (4x the budget, after layer3; a finished
# run is kept); the report re-rendered after every step (days on 2 CPU cores: see the issue's note).
# V2_STAGES picks stages, in that order: a sensitivity run (7,200 steps) outlasts a 3-hour session on a CPU
# at ~1.8 s a step, and its state does not outlive the machine, so such a session runs the walks instead:
# make protocol-v2 V2_STAGES="layer2 layer1"
V2_STAGES ?= layer3 webp sensitivity layer2 layer1
protocol-v2: data checkpoint
	for s in $(V2_STAGES); do \
	  if [ $$s = webp ]; then $(PY) blocksparse_utils.py protocol v2-next --family webp-finetuned --max-steps 100 --report || exit 1; \
	  elif [ $$s = sensitivity ]; then for f in reference block-sparse bottleneck; do \
	    $(PY) blocksparse_utils.py protocol v2-sensitivity --family $$f || exit 1; done; \
	  else for f in bottleneck block-sparse; do \
	    $(PY) blocksparse_utils.py protocol v2-next --split-at $$s --family $$f --max-steps 100 --report || exit 1; done; fi; \
	done

bench: env
	$(PY) blocksparse_utils.py bench

pretrain: data
	$(PY) blocksparse_utils.py pretrain --resume

clean:
	rm -rf build .pytest_cache .hypothesis
