# loopml: two commands set everything up on a fresh machine.
#   make demo   creates .venv, installs torch==2.13.0 and loopml, runs the loop on bundled data
#   make test   installs the test dependencies (a local PostgreSQL, moto's S3 server, Debian's chromium) and runs the suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
# plotly.js's 1.2 MB basic bundle for the web UI, pinned in js/package-lock.json (docs/ui.md);
# without npm the UI serves the plotly package's full bundle, so this never stops the build
NPM_CI := if command -v npm >/dev/null 2>&1; then npm ci --prefix js --omit=dev --no-audit --no-fund || \
	  echo "note: npm ci failed; the web UI will serve the full plotly.js bundle (slower charts)"; \
	else echo "note: no npm; the web UI will serve the full plotly.js bundle (install Node.js, then: make js)"; fi

.PHONY: demo test bench bench-peers ui js clean

$(VENV)/.base: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[server,postgres,data,export,edge,quantize,serve,explain]'
	@$(NPM_CI)
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) -e '.[server,postgres,data,export,edge,quantize,serve,explain,federated,graph,test]'
	touch $@

$(VENV)/.bench: $(VENV)/.base
	$(PIP) -e '.[server,postgres,data,export,edge,quantize,serve,explain,federated,graph,bench]'
	touch $@

demo: $(VENV)/.base
	$(PY) examples/digits_demo.py

# The suite runs on every core (pytest-xdist; each worker has its own PostgreSQL database, see
# docs/testing.md); a file's tests stay on one worker so that its module fixtures are built once.
# --durations=30 shows where the time goes. PYTEST_WORKERS=0 runs in this process (for pdb).
# Bytecode is written even where the environment sets PYTHONDONTWRITEBYTECODE: the tests start
# hundreds of Python processes (the CLI, servers, torchrun, Flower) that would each compile loopml
# again, and pytest would rewrite every test module in each worker: a minute of a 2-core run.
PYTEST_WORKERS ?= auto
test: $(VENV)/.test
	@eval "$$(scripts/test-postgres.sh start)" && eval "$$(VENV=$(VENV) scripts/test-s3.sh start)" && \
	  eval "$$(scripts/test-chromium.sh)" && \
	  env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile --durations=30 $(PYTEST_ARGS)

bench: $(VENV)/.bench
	$(PY) benchmarks/tracking.py
	$(PY) benchmarks/training.py
	$(PY) benchmarks/quantization.py
	eval "$$(scripts/test-chromium.sh)" && $(PY) benchmarks/ui.py --chromium "$$LOOPML_TEST_CHROMIUM"
	$(PY) benchmarks/serving.py --peer-root $(PEERS)   # peers without a venv are skipped and named: make bench-peers
	$(PY) benchmarks/serve_startup.py
	$(PY) benchmarks/ood.py                            # alibi-detect runs from .venv-alibi when present
	$(PY) benchmarks/federated.py                      # plain Flower and centralised training beside loopml.federated.fit
	$(PY) benchmarks/graph.py                          # GCN/SAGE/GAT against an MLP and label propagation; the Trainer against a plain PyG loop

# The peers of benchmarks/serving.py and benchmarks/ood.py, each in its own virtualenv (several GB;
# TorchServe also needs Java 17: apt-get install openjdk-17-jre-headless), and the monitoring peers of
# benchmarks/drift*.py under $(MONITOR_PEERS), as ../shared/peers/monitoring/README.md sets them up
# (torch==2.13.0 named so that pip takes the CPU wheel the constraints pin, never a CUDA one)
PEERS ?= .venv-peers
MONITOR_PEERS ?= .venv-peers/monitoring
bench-peers:
	for v in litserve bento torchserve; do [ -d $(PEERS)/venv-$$v ] || $(PYTHON) -m venv $(PEERS)/venv-$$v; done
	$(PEERS)/venv-litserve/bin/pip install -q -c constraints.txt torch==2.13.0 litserve aiohttp
	$(PEERS)/venv-bento/bin/pip install -q -c constraints.txt torch==2.13.0 bentoml
	$(PEERS)/venv-torchserve/bin/pip install -q -c constraints.txt torch==2.13.0 torchserve torch-model-archiver pyyaml
	[ -d .venv-alibi ] || $(PYTHON) -m venv .venv-alibi
	.venv-alibi/bin/pip install -q -c constraints.txt 'alibi-detect[tensorflow]'
	for v in ev nm ad; do [ -d $(MONITOR_PEERS)/venv_$$v ] || $(PYTHON) -m venv --system-site-packages $(MONITOR_PEERS)/venv_$$v; done
	$(MONITOR_PEERS)/venv_ev/bin/pip install -q -c constraints.txt evidently==0.7.23 'pandas<3' psutil       # pandas 3 breaks evidently's import
	$(MONITOR_PEERS)/venv_nm/bin/pip install -q -c constraints.txt nannyml==0.13.1 'pandas<3' statsmodels psutil  # statsmodels: undeclared
	$(MONITOR_PEERS)/venv_ad/bin/pip install -q -c constraints.txt torch==2.13.0 'alibi-detect[torch]==0.13.0' psutil  # numpy 1.26

ui: $(VENV)/.base
	$(VENV)/bin/loopml ui

js:
	@$(NPM_CI)

clean:
	rm -rf $(VENV) .loopml build *.egg-info js/node_modules
