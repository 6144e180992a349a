# feedwatch: `make help` lists the targets.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: install
install: ## install feedwatch with its test and benchmark tools
	$(PYTHON) -m pip install -q -e '.[test,bench]'

.PHONY: databases
databases: ## start MariaDB, PostgreSQL and a 3-node Galera cluster on loopback (installs them if missing)
	hack/databases up

.PHONY: k8s
k8s: ## build (or reuse) kube-apiserver, controller-manager, scheduler, kwok, helm, kubectl
	hack/k8s-env build

.PHONY: lint
lint: ## ruff, mypy (strict), import-linter, hadolint
	ruff check .
	ruff format --check operator tests bench
	mypy
	lint-imports
	hadolint Dockerfile

.PHONY: test
test: install databases k8s image-tools ## every test on SQLite, MariaDB, PostgreSQL, the real API server and a real image build
	$(PYTEST) -p no:cacheprovider tests

.PHONY: test-fast
test-fast: ## quick loop: SQLite only, no Kubernetes, no fault suite, no bench smoke, no image build
	FEEDWATCH_TEST_DATABASES=sqlite $(PYTEST) -p no:cacheprovider tests -m "not kubernetes and not chart and not faults and not bench and not image" -x

.PHONY: bench
bench: install databases ## benchmarks: prints a table, writes bench/results/report.md and a plot
	$(PYTHON) -m bench

.PHONY: demo
demo: ## the demo: screen job applications on a temporary SQLite database
	feedwatch demo

.PHONY: constraints
constraints: ## re-pin requirements/constraints.txt (the image's dependencies) from pyproject.toml
	hack/image constraints

.PHONY: image-tools
image-tools: ## install podman, buildah, runc and debootstrap if missing (the image tier of make test)
	hack/image tools

.PHONY: image
image: ## build the image with podman (Debian base, offline from a wheelhouse): localhost/feedwatch:<version>
	hack/image build

.PHONY: chart-crd
chart-crd: ## copy crds/feedwatcher.yaml into the chart (Helm reads no file outside it)
	cp crds/feedwatcher.yaml charts/feedwatch/files/crds/feedwatcher.yaml
