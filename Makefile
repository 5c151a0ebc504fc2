# CortexOS. Everything here needs only Go: code generators and checkers come
# through the Go module proxy at the versions pinned in go.mod.

GO        ?= go
PROTO_SRC  = api/proto/v1
PB_OUT     = pkg/pb/v1
MODULE     = github.com/cortex-os/core
PROTOCHECK = $(GO) run ./tools/protocheck
ARGS      ?=

.PHONY: all proto proto-check build build-scheduler build-worker-echo build-cortex \
	dev-up test test-short fmt-check vet bench fuzz chaos helm-check clean \
	python-venv proto-python proto-python-check test-python build-worker-python

all: build

## proto: regenerate pkg/pb/v1 from api/proto/v1 with the pure-Go protoc in
## tools/protocheck: protoc-gen-go's generator (*.pb.go), vtprotobuf's
## (*_vtproto.pb.go: reflection-free marshalling for the bus) and CheckUTF8
## (*_utf8.pb.go), at the versions pinned in go.mod. protoc itself, when
## installed, is used by proto-check to confirm the files compile with it.
proto:
	$(PROTOCHECK) generate

## proto-check: the committed generated code is fresh, and api/proto/v1 keeps
## the v1 wire contract of api/proto/baseline. With protoc installed, also
## checks that the files compile with protoc from the repository root.
proto-check:
	$(PROTOCHECK) stale
	$(PROTOCHECK) breaking --against api/proto/baseline
	@if command -v protoc >/dev/null 2>&1; then \
		protoc -I . -o /dev/null $(PROTO_SRC)/*.proto && echo "protoc $$(protoc --version | cut -d' ' -f2) compiles $(PROTO_SRC)"; \
	fi

build: build-scheduler build-worker-echo build-worker-python build-cortex

build-scheduler:
	$(GO) build -o bin/cortex-scheduler ./cmd/cortex-scheduler

build-worker-echo:
	$(GO) build -o bin/cortex-worker-echo ./cmd/cortex-worker-echo

build-worker-python:
	$(GO) build -o bin/cortex-worker-python ./cmd/cortex-worker-python

build-cortex:
	$(GO) build -o bin/cortex ./cmd/cortex

## dev-up: NATS (embedded, JetStream), the scheduler and an echo worker, in one
## process. Ctrl-C stops it. Extra flags: make dev-up ARGS="--workers 3".
## It builds every binary first, so ./bin/cortex-worker-echo and the others
## the README runs next to it are there.
dev-up: build
	./bin/cortex dev $(ARGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## test: everything CI runs.
test: proto-check fmt-check vet test-python
	$(GO) test -race -count=1 -timeout 15m ./...
	@echo "make test: all checks passed (proto, fmt, vet, go test -race, python)"

## The Python SDK (sdk/python) is tested from a virtualenv, $(VENV), made
## with $(PYTHON3) when absent; the package is installed into it as a user
## would (pip install ./sdk/python), again whenever its sources change.
VENV    ?= .venv
PYTHON3 ?= python3
PY_SDK   = sdk/python

$(VENV)/.cortexos-installed: $(PY_SDK)/pyproject.toml $(shell find $(PY_SDK)/src -type f \( -name '*.py' -o -name '*.pyi' -o -name py.typed \) 2>/dev/null)
	@test -x $(VENV)/bin/python || $(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check "./$(PY_SDK)[test]"
	@touch $@

python-venv: $(VENV)/.cortexos-installed

## proto-python: regenerate the Python SDK's cortex.v1 modules with the
## protoc of grpcio-tools (the version pinned in sdk/python/pyproject.toml).
proto-python: python-venv
	PYTHON=$(VENV)/bin/python $(PY_SDK)/scripts/gen_proto.sh

proto-python-check: python-venv
	PYTHON=$(VENV)/bin/python $(PY_SDK)/scripts/gen_proto.sh --check

## test-python: the SDK's tests, against a real cortex dev built from here.
## PYTEST_ARGS selects some (make test-python PYTEST_ARGS="-k cancel"). pytest
## exits 5 when it ran no test: with PYTEST_ARGS that is a selection that
## matched nothing, said and not an error; without, the suite is missing, an error.
PYTEST_ARGS ?=
test-python: proto-python-check
	cd $(PY_SDK) && $(abspath $(VENV))/bin/python -m mypy src
	@cd $(PY_SDK) && { $(abspath $(VENV))/bin/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		if [ -n "$(strip $(PYTEST_ARGS))" ]; then echo "test-python: no test matches PYTEST_ARGS=$(PYTEST_ARGS)"; exit 0; fi; \
		echo "test-python: pytest collected no tests in $(PY_SDK)/tests"; exit 1; \
	fi; exit $$rc; }

## test-short: unit tests only, no end-to-end processes.
test-short:
	$(GO) test -short -count=1 ./...

## bench: the system against the raw-NATS floor, measured in the same run.
bench:
	$(GO) run ./cmd/cortex bench $(ARGS)

## chaos: the randomized fault run of test/cluster (nodes, schedulers and
## workers killed and restarted under load) for CHAOS_TIME; replay one with
## CORTEX_CHAOS_SEED=<the seed it printed>.
CHAOS_TIME ?= 60s
chaos:
	CORTEX_CHAOS_TIME=$(CHAOS_TIME) $(GO) test -race -count=1 -timeout 30m -run '^TestChaos$$' -v ./test/cluster

## helm-check: helm lint and helm template of deploy/helm/cortex (docs/deploy.md);
## helm is built once from the Go module proxy into .bin/.
HELM_VERSION ?= v4.3.2
HELM = .bin/helm-$(HELM_VERSION)
$(HELM):
	@mkdir -p .bin
	GOBIN=$(CURDIR)/.bin/tmp-$(HELM_VERSION) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)
	mv .bin/tmp-$(HELM_VERSION)/helm $@ && rmdir .bin/tmp-$(HELM_VERSION)
helm-check: $(HELM)
	$(HELM) lint --strict deploy/helm/cortex
	$(HELM) template cortex deploy/helm/cortex >/dev/null
	$(HELM) template cortex deploy/helm/cortex --set gateway.enabled=false --set safety.enabled=false \
		--set safety.policyConfigMap=policy --set scheduler.replicas=1 --set nats.credentials.scheduler= >/dev/null
	@echo "helm-check: chart lints and renders"

FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(FUZZTIME) ./internal/infrastructure/bus
	$(GO) test -run '^$$' -fuzz='^FuzzDecodeMatchesProtobuf$$' -fuzztime=$(FUZZTIME) ./internal/infrastructure/bus
	$(GO) test -run '^$$' -fuzz='^FuzzDecodeTransientMatchesDecode$$' -fuzztime=$(FUZZTIME) ./internal/infrastructure/bus
	$(GO) test -run '^$$' -fuzz='^FuzzAnswerVerdictMatchesDecode$$' -fuzztime=$(FUZZTIME) ./internal/infrastructure/bus
	$(GO) test -run '^$$' -fuzz='^FuzzParsePolicy$$' -fuzztime=$(FUZZTIME) ./internal/safety
	$(GO) test -run '^$$' -fuzz='^FuzzRemoteAnswer$$' -fuzztime=$(FUZZTIME) ./internal/safety
	$(GO) test -run '^$$' -fuzz='^FuzzParseConfig$$' -fuzztime=$(FUZZTIME) ./internal/placement
	$(GO) test -run '^$$' -fuzz='^FuzzValidateTopic$$' -fuzztime=$(FUZZTIME) ./internal/scheduler
	$(GO) test -run '^$$' -fuzz='^FuzzClientRequest$$' -fuzztime=$(FUZZTIME) ./internal/scheduler
	$(GO) test -run '^$$' -fuzz='^FuzzValidateRequest$$' -fuzztime=$(FUZZTIME) ./internal/scheduler
	$(GO) test -run '^$$' -fuzz='^FuzzDecodePageToken$$' -fuzztime=$(FUZZTIME) ./internal/jobstore
	$(GO) test -run '^$$' -fuzz='^FuzzSource$$' -fuzztime=$(FUZZTIME) ./internal/sandbox/pyworker
	$(GO) test -run '^$$' -fuzz='^FuzzParsePointer$$' -fuzztime=$(FUZZTIME) ./pkg/blob
	$(GO) test -run '^$$' -fuzz='^FuzzDecodeSubmit$$' -fuzztime=$(FUZZTIME) ./internal/gateway

clean:
	rm -rf bin
