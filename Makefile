# Two commands for a newcomer: `make demo` (the main job) and `make test`. Each sets itself up.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: setup tools demo test unit integration lint schemas broker-start broker-stop clean

setup: $(STAMP)

# Deployment checkers (tests/unit/deploy): pinned Go tools built through the Go module proxy.
TOOLS := $(abspath .tools/bin)
GO_TOOLS := $(TOOLS)/kustomize $(TOOLS)/kubeconform $(TOOLS)/promtool $(TOOLS)/docker-compose
tools: $(GO_TOOLS)
$(TOOLS)/kustomize:
	@echo "==> building kustomize (once)"; GOBIN=$(TOOLS) go install sigs.k8s.io/kustomize/kustomize/v5@v5.6.0
$(TOOLS)/kubeconform:
	@echo "==> building kubeconform (once)"; GOBIN=$(TOOLS) go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0
$(TOOLS)/promtool:
	@echo "==> building promtool (once; a few minutes)"; GOBIN=$(TOOLS) go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0
# `go install` refuses compose's go.mod (exclude directives), so build it inside its module
$(TOOLS)/docker-compose:
	@echo "==> building docker compose (once; only its offline \`config\` is used)"
	@scratch=$$(mktemp -d) && cd $$scratch && go mod init scratch >/dev/null 2>&1 \
	  && dir=$$(go mod download -json github.com/docker/compose/v5@v5.6.0 | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p') \
	  && cd "$$dir" && go build -o $(TOOLS)/docker-compose ./cmd && rm -rf $$scratch

$(STAMP): pyproject.toml
	@echo "==> setting up $(VENV) (Python packages; first time takes a few minutes: torch is large)"
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@test -x $(PY) || python3 -m uv venv --quiet $(VENV)
	@python3 -m uv pip install --python $(PY) -e '.[train,dev]'
	@rm -f $(VENV)/.installed-*; touch $@

demo: setup
	@echo "==> demo: local broker, topics, a first model if none, worker, live traffic, summary"
	$(VENV)/bin/foresight demo

test: setup tools
	@echo "==> lint (ruff), types (mypy), JSON Schemas, then the tests (the broker is started by them)"
	$(VENV)/bin/ruff check schemas workers models tests
	$(VENV)/bin/ruff format --check schemas workers models tests
	$(VENV)/bin/mypy schemas workers
	$(PY) -m schemas.jsonschema --check
	@$(PY) -m pytest -ra tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

unit: setup
	$(PY) -m pytest -ra tests/unit

lint: setup
	$(VENV)/bin/ruff check schemas workers models tests
	$(VENV)/bin/ruff format --check schemas workers models tests
	$(VENV)/bin/mypy schemas workers

schemas: setup
	$(PY) -m schemas.jsonschema

broker-start: setup
	$(VENV)/bin/foresight broker start

broker-stop: setup
	$(VENV)/bin/foresight broker stop

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
