# The two set-up commands of the README. Both create/reuse a local virtualenv in .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test bench install browser

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# setuptools' notice that an editable install reads the working tree is not news here
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/python -m pip install --quiet -e '.[all]'
	touch $@

install: $(BIN)/.installed

# The main job on its defaults: train RLlib PPO on AgentRouting, checkpoint, evaluate it
# against the baselines and write the report into Hydra's run directory (printed at the end).
run: $(BIN)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m experiments.train

# The whole test suite (slow tests included). pytest exits non-zero when no test ran.
test: $(BIN)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

bench: $(BIN)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m experiments.bench env

# Headless Chromium and its driver from Debian's packages, for the report checks marked
# `browser` (they are skipped, saying why, without them). Needs root or sudo.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver'
