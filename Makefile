# The two set-up commands of the README. Both create/reuse a local virtualenv in .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test bench install browser

# (PYTHONWARNINGS: setuptools' notice that an editable install reads the working tree is
# not news here)
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/python -m pip install --quiet -e '.[all]'
	touch $@

install: $(BIN)/.installed

# the test suite also needs the rlhf extra (TRL, transformers, datasets): make run does not
$(BIN)/.installed-rlhf: $(BIN)/.installed
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/python -m pip install --quiet -e '.[all,rlhf]'
	touch $@

# The main job on its defaults: train RLlib PPO on AgentRouting, checkpoint, evaluate it
# against the baselines and write the report into Hydra's run directory (printed at the end).
run: $(BIN)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m experiments.train

# The whole test suite (slow tests included). pytest exits non-zero when no test ran.
# Chromium is installed first where it can be (the tests marked `browser` need it).
test: $(BIN)/.installed-rlhf browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

bench: $(BIN)/.installed
	OMP_NUM_THREADS=1 $(BIN)/python -m experiments.bench env

# Headless Chromium and its driver from Debian's packages, for the report checks marked
# `browser`: installed as root or with passwordless sudo; otherwise one line says so and
# those tests are skipped, saying why. Never fails the target that asked for it.
APT = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then (apt-get update -qq && $(APT)) >/dev/null 2>&1 || \
	  echo "make browser: apt-get could not install chromium; browser tests will be skipped"; \
	elif sudo -n true 2>/dev/null; then (sudo -n apt-get update -qq && sudo -n $(APT)) \
	  >/dev/null 2>&1 || echo "make browser: apt-get failed; browser tests will be skipped"; \
	else echo "make browser: needs root or passwordless sudo; browser tests will be skipped"; fi
