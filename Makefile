# The README's two commands are `make demo` and `make test`; the rest help.
SHELL := bash
DEV_DIR ?= .dev/cluster

.PHONY: build test test-faults image-test demo demo-down bench lint crds dev-cluster dev-cluster-down control-plane

build:
	cargo build

## demo: a local control plane, the operator under its ServiceAccount, the samples
demo:
	hack/demo.sh

demo-down:
	hack/demo.sh down

## bench: teamaccess side by side with rbac-manager (docs/benchmark.md); BENCH_SCENARIOS=S,M,L; not part of test
bench:
	hack/bench.sh

## test: every unit, CLI and integration test, against a real control plane
test:
	hack/test.sh

## test-faults: control planes of their own, broken on purpose (components killed and restarted) under a running operator
test-faults:
	hack/test-faults.sh

## image-test: build the image here (static binary on scratch, podman) and run it hardened against a real control plane
image-test:
	hack/image-test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features failpoints -- -D warnings
	cargo clippy --test faults --features failpoints -- -D warnings

## crds: regenerate crds/ from the TeamAccess type, and its copies for kustomize (config/crd/) and Helm (charts/teamaccess/crds/)
crds:
	cargo run -q -- crd > crds/teamaccess.dev_teamaccesses.yaml
	cp crds/teamaccess.dev_teamaccesses.yaml config/crd/teamaccess.dev_teamaccesses.yaml
	cp crds/teamaccess.dev_teamaccesses.yaml charts/teamaccess/crds/teamaccess.dev_teamaccesses.yaml

## control-plane: build (or find cached) kube-apiserver, controller-manager, kubectl, etcd
control-plane:
	hack/build-control-plane.sh

## dev-cluster: a control plane for a person; prints its kubeconfig
dev-cluster:
	@env_file=$$(hack/control-plane.sh up $(DEV_DIR)) && . $$env_file && \
	echo && echo "admin kubeconfig: $$KUBECONFIG" && \
	echo "use it:  source $$env_file   (sets KUBECONFIG, the test variables, and PATH to the matching kubectl)" && \
	echo "then:    kubectl get ns    or    cargo test --test integration" && \
	echo "stop it: make dev-cluster-down"

dev-cluster-down:
	hack/control-plane.sh down $(DEV_DIR)
