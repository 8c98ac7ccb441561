# shopkeeper — the two commands a newcomer needs: `make up` and `make test`.
# Everything is real (MariaDB, FerretDB, Kafka, Zipkin, a Kubernetes control plane and a real node whose pods
# run the platform) on this machine with no Docker; tools are built once into ~/.cache/shopkeeper.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo

.PHONY: help up down status test test-only chaos fuzz lint fmt build bench crds clean-state tools \
        kind-up kind-images kind-install kind-shop kind-down token

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

up: ## start the whole platform: stack, control plane, real node, operator (Helm) and the Shop's pods (prints URLs)
	@hack/up.sh

down: ## stop everything `make up` / `make test` started and undo the node's changes to the machine; keep data
	@hack/platform.sh down; hack/stack.sh down

status: ## what is running, and where
	@hack/stack.sh status; hack/platform.sh status

test: ## lint, then every test against the real stack (starts what is missing, stops what it started)
	@hack/test.sh

test-only: ## the tests without lint (stack must be up or is started)
	@SHOP_SKIP_LINT=1 hack/test.sh

chaos: ## the chaos soak on `make up`'s Shop: 10,000+ orders through pod kills and pauses, nothing lost; writes docs/reliability.md
	@hack/chaos.sh $(ARGS)

fuzz: ## schemathesis on every JSON endpoint, directly and through the gateway, many examples; writes docs/reliability.md
	@hack/fuzz.sh

lint: ## rustfmt check, clippy -D warnings on all targets, helm lint of the chart
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@if [ -x .state/bin/helm ]; then .state/bin/helm lint charts/shopkeeper; else echo "helm not built yet: run make up"; fi

fmt: ## format the code
	$(CARGO) fmt --all

build: ## build every binary (debug)
	$(CARGO) build --workspace --bins --locked

bench: ## run the benchmarks against real processes; writes docs/benchmarks.md
	@hack/bench.sh

crds: ## regenerate crds/shop.yaml and the chart's copy from the operator's code
	SHOP_UPDATE_CRDS=1 $(CARGO) test -q -p shop-operator --test crd

tools: ## build/install every stack tool into the cache (no servers started)
	@hack/tools.sh all

clean-state: down ## stop everything and delete all local data (.state)
	rm -rf .state

# ---- kind (needs Docker; cannot run on the project's CI machines — see docs/operator.md) ----
kind-up: ## create the kind cluster from kind-config.yaml
	hack/kind.sh up
kind-images: ## build the operator and service images (shopkeeper.local/shop-*:dev) and load them into kind
	hack/kind.sh images
kind-install: ## helm install the operator chart into kind
	hack/kind.sh install
kind-shop: ## apply examples/kind/shop.yaml (its stores managed, public images) and wait until it is Available
	hack/kind.sh shop
kind-down: ## delete the kind cluster
	hack/kind.sh down

token: ## print a development JWT for the gateway (sub=dev, scopes for every route); uses the dev secret of make up
	@target/debug/shop-gateway mint-token --secret "$${SHOP_DEV_JWT_SECRET:-shopkeeper-dev-secret-change-me-0123456789}" --sub dev --scope "orders:write products:write inventory:write"
