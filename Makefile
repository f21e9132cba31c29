# modelgate: `make demo` and `make test` are all a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
# CPU build of torch; override e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
PIP_FLAGS ?= -q --disable-pip-version-check
export MODELGATE_VLLM_PYTHON ?= $(abspath $(VLLM_VENV))/bin/python
export MODELGATE_TEST_CACHE ?= $(abspath .cache/test-models)

STAMP := $(VENV)/.modelgate-env
VLLM_STAMP := $(VLLM_VENV)/.modelgate-env
PY := $(VENV)/bin/python

.PHONY: system-packages venvs check-env demo test test-unit test-e2e test-cluster lint docs pipelines lock clean

venvs: system-packages $(STAMP) $(VLLM_STAMP) check-env

# Debian tools the tests use on loopback: an OCI registry, skopeo and a static busybox (the shell
# of the test modelcars' base image), Chromium (renders the HTML reports). Installed when running
# as root; otherwise the tests that need them skip, naming the package.
APT_PACKAGES ?= docker-registry skopeo busybox-static chromium
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo ">> installing" $$missing "(apt)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	    || echo ">> apt-get failed: tests that need" $$missing "will skip"; \
	else \
	  echo ">> not root: tests that need" $$missing "will skip (apt-get install" $$missing ")"; \
	fi

$(STAMP): requirements/main.txt pyproject.toml
	@echo ">> creating $(VENV) (project, KFP, lm-eval, llm-compressor)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) $(TORCH_SPEC)
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps -r requirements/main.txt
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

$(VLLM_STAMP): requirements/vllm.txt
	@echo ">> creating $(VLLM_VENV) (vLLM serving runtime)"
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install $(PIP_FLAGS) $(TORCH_SPEC)
	$(VLLM_VENV)/bin/pip install $(PIP_FLAGS) --no-deps -r requirements/vllm.txt
	@# ABI-incompatible with the CPU torch build; vLLM's CPU path does not need them
	$(VLLM_VENV)/bin/pip uninstall $(PIP_FLAGS) -y torchvision torchaudio torchcodec triton 2>/dev/null || true
	touch $@

# A second `make` only runs this: every environment still has what it needs.
check-env: $(STAMP) $(VLLM_STAMP)
	@$(PY) -c "import importlib.util as u, sys; m=[n for n in ('modelgate','kfp','kfp.kubernetes','lm_eval','llmcompressor','model_registry','kserve','olah','torch') if u.find_spec(n) is None]; sys.exit(f'$(VENV) lacks {m}: run make clean venvs' if m else 0)"
	@$(VLLM_VENV)/bin/python -c "import importlib.util as u, sys; sys.exit('$(VLLM_VENV) lacks vllm: run make clean venvs' if u.find_spec('vllm') is None else 0)"
	@echo ">> environments ok: $(VENV), $(VLLM_VENV)"

demo: venvs
	$(VENV)/bin/modelgate demo

# lint first, so a lint failure fails quickly; then every tier (cluster and gpu tests skip
# themselves with the reason unless their server/GPU exists)
test: venvs lint
	$(PY) -m pytest -rs $(PYTEST_ARGS)

test-unit: venvs
	$(PY) -m pytest -m "unit or compile" $(PYTEST_ARGS)

test-e2e: venvs
	$(PY) -m pytest -m e2e $(PYTEST_ARGS)

test-cluster: venvs
	$(PY) -m pytest -m "cluster" -rs $(PYTEST_ARGS)

LINT_PATHS := src components pipelines tests benchmarks scripts

# ruff, then mypy over src/ ([tool.mypy] in pyproject.toml)
lint: venvs
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

docs: venvs
	$(PY) scripts/gen_docs.py

pipelines: venvs
	$(VENV)/bin/modelgate compile

lock: $(STAMP)
	{ grep '^#' requirements/main.txt; $(VENV)/bin/pip freeze --exclude-editable | grep -v '^torch=='; } > requirements/main.txt.new
	mv requirements/main.txt.new requirements/main.txt
	$(PY) requirements/lock_eval.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) local_outputs .pytest_cache
