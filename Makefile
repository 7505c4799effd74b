# KafkaChannel operator. `make help` lists the targets.

# The real single-node cluster's env file (make cluster writes it; READY=1 last). While it is up,
# the image, deploy and test-cluster targets use its KUBECONFIG and its local registry.
CLUSTER_ENV ?= $(CURDIR)/.cluster/env
cluster-var = $(shell [ -f "$(CLUSTER_ENV)" ] && tail -1 "$(CLUSTER_ENV)" | grep -qx 'READY=1' && sed -n 's/^$(1)=//p' "$(CLUSTER_ENV)" | tail -1)
CLUSTER_KUBECONFIG = $(call cluster-var,KUBECONFIG)
CLUSTER_REGISTRY = $(call cluster-var,REGISTRY)
# kubectl against that cluster when it is up, else the current context (kind, any cluster).
KUBECTL_ENV = $(if $(CLUSTER_KUBECONFIG),KUBECONFIG=$(CLUSTER_KUBECONFIG))

# Images (make deploy IMG=... wires them into the manifests). Recursive variables on purpose:
# `make cluster docker-build docker-push deploy` reads the registry once the cluster wrote it.
VERSION ?= 0.1.0
IMAGE_REGISTRY ?= ghcr.io/kafkachannel
# The targets that build, push and install images use the cluster's registry while it is up;
# make bundle keeps the release names.
CLUSTER_IMAGE_TARGETS := docker-build docker-push deploy undeploy samples test-cluster kind-load
$(CLUSTER_IMAGE_TARGETS): IMAGE_REGISTRY = $(if $(CLUSTER_REGISTRY),$(CLUSTER_REGISTRY)/kafkachannel,ghcr.io/kafkachannel)
IMG ?= $(IMAGE_REGISTRY)/kafkachannel-manager:v$(VERSION)
DISPATCHER_IMG ?= $(IMAGE_REGISTRY)/kafkachannel-dispatcher:v$(VERSION)
RECEIVER_IMG ?= $(IMAGE_REGISTRY)/kafkachannel-receiver:v$(VERSION)
# The subscriber of the samples and of make test-cluster (cmd/eventdisplay).
EVENTDISPLAY_IMG ?= $(IMAGE_REGISTRY)/kafkachannel-eventdisplay:v$(VERSION)
# docker (or podman) builds the Dockerfile; crane assembles the same images with no engine and
# no registry access (hack/image/build.sh). The default follows whether a Docker engine answers.
CONTAINER_TOOL ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo crane)
# The images' base: distroless where it can be pulled; `scratch` (crane only) is a base made
# from this machine's CA bundle and a nonroot user 65532, for machines that cannot pull it.
BASE_IMAGE ?= $(if $(filter crane,$(CONTAINER_TOOL)),scratch,gcr.io/distroless/static:nonroot)
IMAGE_BIN ?= $(LOCALBIN)/image
IMAGE_OUT ?= $(LOCALBIN)/images
KIND_CLUSTER ?= kind

# Tools and envtest binaries are cached per user, outside the clone: a fresh clone on the same
# machine (CI) reuses them instead of rebuilding kube-apiserver for ten minutes.
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kafkachannel
TOOLBIN ?= $(CACHE_DIR)/tools
LOCALBIN ?= $(CURDIR)/bin
ENVTEST_K8S_VERSION ?= 1.35.4
ENVTEST_ETCD_VERSION ?= 3.6.5
ENVTEST_ASSETS ?= $(CACHE_DIR)/envtest/k8s/$(ENVTEST_K8S_VERSION)-linux-amd64

# Apache Kafka (real brokers, assembled from Maven Central by hack/kafka/dist.sh):
# KAFKA=apache runs the demo on it instead of the embedded kfake; make test-kafka runs the suites
# on both versions.
KAFKA ?= kfake
KAFKA_VERSION ?= 4.4.0
KAFKA_VERSION_39 ?= 3.9.2
KAFKA_BROKERS ?= 1

# Knative Eventing release of the peer run (make test-knative), built by hack/build-knative.sh.
KNATIVE_VERSION ?= v0.47.0

CONTROLLER_TOOLS_VERSION ?= v0.23.0
GOLANGCI_LINT_VERSION ?= v2.15.0
OPERATOR_SDK_VERSION ?= v1.42.2
CRANE_VERSION ?= v0.22.1

CONTROLLER_GEN ?= $(TOOLBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GOLANGCI_LINT ?= $(TOOLBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
OPERATOR_SDK ?= $(TOOLBIN)/operator-sdk-$(OPERATOR_SDK_VERSION)
CRANE ?= $(TOOLBIN)/crane-$(CRANE_VERSION)
KUBECTL ?= kubectl
KUSTOMIZE ?= $(KUBECTL) kustomize

GO_TEST_FLAGS ?= -timeout 30m
# make test fuzzes with execution-count budgets: a wall-clock -fuzztime can fail at random on a
# busy machine (hack/fuzz.sh explains why). The counts match what 10 s explored on 2 idle cores.
FUZZ_EXECS_TOEVENT ?= 20000x
FUZZ_EXECS_DECODE ?= 8000x
FUZZ_EXECS_VERIFY ?= 8000x
FUZZTIME ?= 10m
LDFLAGS ?= -s -w -X github.com/kafkachannel/kafkachannel/internal/version.Version=$(VERSION)
BINARIES := manager dispatcher receiver localstack eventdisplay

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and the manager's ClusterRole from the Go markers.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=kafkachannel-manager-role paths="./controllers/..." output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: controller-gen ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: verify-generated
verify-generated: ## Fail if generated files differ from what the generators write now.
	@./hack/verify-generated.sh "$(MAKE)"

.PHONY: verify-bundle
verify-bundle: operator-sdk ## Fail if bundle/ differs from what `make bundle` generates, or does not validate.
	@before=$$(mktemp -d); cp -r bundle bundle.Dockerfile $$before/; \
	  $(MAKE) -s bundle >/dev/null 2>&1 || { echo "make bundle failed"; exit 1; }; \
	  if ! diff -r $$before/bundle bundle >/dev/null || ! diff $$before/bundle.Dockerfile bundle.Dockerfile >/dev/null; then \
	    echo "bundle/ was out of date; it has been regenerated: review and commit it"; diff -r $$before/bundle bundle | head -40; exit 1; fi; \
	  rm -rf $$before
	$(OPERATOR_SDK) bundle validate ./bundle --select-optional suite=operatorframework

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -l -w $$(git ls-files '*.go' | grep -v '^vendor/')

.PHONY: fmt-check
fmt-check: ## Fail if gofmt would change a file.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (waits for another running instance instead of failing).
	$(GOLANGCI_LINT) run --allow-serial-runners ./...

.PHONY: test
test: verify-generated verify-bundle fmt-check vet lint test-short-clean envtest kcat kafka-dist fuzz-short bench-short $(if $(filter crane,$(CONTAINER_TOOL)),docker-build) ## Everything CI checks: drift, vet, lint, unit, envtest and e2e tests, the images (built with crane where no Docker engine answers, checked by test/images), the real-Kafka smoke (Apache Kafka $(KAFKA_VERSION)).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" CACHE_DIR="$(CACHE_DIR)" KAFKA_VERSION=$(KAFKA_VERSION) go test $(GO_TEST_FLAGS) ./... 2>&1 | tee $(LOCALBIN)/test.log
	@grep -E '^(ok|FAIL|---)' $(LOCALBIN)/test.log | grep -v '^--- PASS' | tail -40; \
	  printf '%s passed, %s failed\n' $$(grep -c '^ok ' $(LOCALBIN)/test.log) $$(grep -c '^FAIL\b' $(LOCALBIN)/test.log)

# The packages that talk to Kafka, run against the cluster `localstack kafka` starts.
KAFKA_TEST_PKGS ?= ./test/e2e ./dispatcher ./receiver ./controllers ./internal/kafkaconn ./internal/observability ./internal/replay

.PHONY: test-kafka
test-kafka: envtest build ## The Kafka-facing suites on real Apache Kafka $(KAFKA_VERSION) and $(KAFKA_VERSION_39) (KAFKA_BROKERS=3 for three brokers), then the fault suite on three brokers of each; logs in bin/test-kafka-*.log.
	@fail=0; for v in $(KAFKA_VERSION) $(KAFKA_VERSION_39); do \
	  ./hack/kafka/dist.sh $$v "$(CACHE_DIR)/kafka-$$v" || exit 1; \
	  echo "==> Apache Kafka $$v ($(KAFKA_BROKERS) broker(s)): $(KAFKA_TEST_PKGS)"; \
	  KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" CACHE_DIR="$(CACHE_DIR)" KAFKA_VERSION=$$v KAFKA_BROKERS=$(KAFKA_BROKERS) \
	    $(LOCALBIN)/localstack kafka --dir "$(CURDIR)/.demo/kafka-test-$$v" -- \
	    go test -p 1 -count=1 $(GO_TEST_FLAGS) $(KAFKA_TEST_PKGS) 2>&1 | tee $(LOCALBIN)/test-kafka-$$v.log || fail=1; \
	  echo "==> Apache Kafka $$v: environments/apachekafka (brokers of its own)"; \
	  CACHE_DIR="$(CACHE_DIR)" KAFKA_VERSION=$$v go test -count=1 $(GO_TEST_FLAGS) ./environments/apachekafka 2>&1 | tee -a $(LOCALBIN)/test-kafka-$$v.log || fail=1; \
	done; \
	rm -f $(LOCALBIN)/test-kafka-faults.log; \
	for v in $(KAFKA_VERSION) $(KAFKA_VERSION_39); do \
	  echo "==> Apache Kafka $$v, three brokers: the fault suite (rewrites its table in docs/reliability.md)"; \
	  $(MAKE) --no-print-directory test-faults KAFKA=apache KAFKA_BROKERS=3 KAFKA_VERSION=$$v 2>&1 | tee -a $(LOCALBIN)/test-kafka-faults.log || fail=1; \
	done; \
	for v in $(KAFKA_VERSION) $(KAFKA_VERSION_39); do printf 'Apache Kafka %s: ' $$v; \
	  printf '%s passed, %s failed\n' $$(grep -c '^ok ' $(LOCALBIN)/test-kafka-$$v.log) $$(grep -c '^FAIL\b' $(LOCALBIN)/test-kafka-$$v.log); done; \
	printf 'Fault suite on three brokers (%s then %s): %s\n' $(KAFKA_VERSION) $(KAFKA_VERSION_39) "$$(grep -E '^(ok|FAIL)\b' $(LOCALBIN)/test-kafka-faults.log | tr '\n' ' ')"; \
	exit $$fail

.PHONY: fuzz-short
fuzz-short: ## A short real fuzzing run of the data-path parsers (events, bearer tokens), sized by execution counts (part of make test).
	./hack/fuzz.sh ./internal/kafkabinding FuzzToEvent $(FUZZ_EXECS_TOEVENT) -parallel 2
	./hack/fuzz.sh ./receiver FuzzDecodeEvent $(FUZZ_EXECS_DECODE) -parallel 2
	./hack/fuzz.sh ./internal/oidc FuzzVerify $(FUZZ_EXECS_VERIFY) -parallel 2

.PHONY: fuzz
fuzz: ## Fuzz the data-path parsers for FUZZTIME each (default 10m); fails only on a real finding.
	./hack/fuzz.sh ./internal/kafkabinding FuzzToEvent $(FUZZTIME) -parallel 2
	./hack/fuzz.sh ./receiver FuzzDecodeEvent $(FUZZTIME) -parallel 2
	./hack/fuzz.sh ./internal/oidc FuzzVerify $(FUZZTIME) -parallel 2

.PHONY: test-stress
test-stress: ## make test three times (RUNS) on a fresh clone of HEAD while a CPU hog keeps every core busy.
	RUNS=$(or $(RUNS),3) ./hack/test-stress.sh

.PHONY: test-faults
test-faults: envtest $(if $(filter apache,$(KAFKA)),kafka-dist) ## The whole fault suite on the local stack (~3 min); rewrites its table in docs/reliability.md (KAFKA=apache KAFKA_BROKERS=3: the real-cluster scenarios on three Apache Kafka $(KAFKA_VERSION) brokers, ~10 min).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" CACHE_DIR="$(CACHE_DIR)" KAFKA=$(KAFKA) KAFKA_VERSION=$(KAFKA_VERSION) KAFKA_BROKERS=$(KAFKA_BROKERS) \
	  KAFKACHANNEL_FAULTS=full KAFKACHANNEL_FAULTS_DOC=$(CURDIR)/docs/reliability.md go test ./test/faults -count=1 -v -timeout 40m

.PHONY: bench
bench: $(if $(filter apache,$(KAFKA)),build kafka-dist) ## Benchmarks against baselines from the same run; writes docs/benchmarks.md, docs/benchmarks.png and docs/benchmarks-latency.png (KAFKA=apache: on one Apache Kafka $(KAFKA_VERSION) broker, into the document's second table and docs/benchmarks-latency-apache.png).
ifeq ($(KAFKA),apache)
	CACHE_DIR="$(CACHE_DIR)" KAFKA_VERSION=$(KAFKA_VERSION) KAFKA_BROKERS=1 \
	  $(LOCALBIN)/localstack kafka --dir "$(CURDIR)/.demo/bench-kafka" -- go run ./cmd/bench -apache
else
	go run ./cmd/bench
endif

.PHONY: bench-scale
bench-scale: build ## The control plane at scale (issue 16 S1, S3): 300 channels x 2 subscribers on the local stack with faked dispatcher pods; writes its own section of docs/benchmarks.md (~5 min; not part of make test).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go run ./cmd/bench -scale

.PHONY: bench-short
bench-short: ## A few-second run of the bench tool with small counts: prints the table, writes no doc; fails only if a measurement errors, never on a ratio (part of make test).
	go run ./cmd/bench -short

.PHONY: knative
knative: ## Build Knative Eventing's controller $(KNATIVE_VERSION) from the Go module proxy for make test-knative (~5 min the first time on 2 cores).
	KNATIVE_VERSION=$(KNATIVE_VERSION) CACHE_DIR="$(CACHE_DIR)" ./hack/build-knative.sh >/dev/null

.PHONY: test-knative
test-knative: envtest knative ## The Knative peer run (~30 s): Knative's own controller drives a KafkaChannel through Subscriptions on the local stack (docs/knative-compatibility.md).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" CACHE_DIR="$(CACHE_DIR)" KNATIVE_VERSION=$(KNATIVE_VERSION) KAFKACHANNEL_KNATIVE=1 go test ./test/knative -count=1 -v -timeout 10m

.PHONY: test-unit
test-unit: ## Run only the tests that need neither envtest nor the local stack.
	go test -short ./...

# test-short-clean plays a clean machine: no envtest binaries, an empty HOME (no kubeconfig, no
# cached tools), an empty cache dir and no Kafka. Only the Go caches are the real ones, so it
# stays fast (and cached results are reused: the paths below do not change between runs).
SHORT_CLEAN_DIR ?= $(LOCALBIN)/short-clean

.PHONY: test-short-clean
test-short-clean: ## `go test -short ./...` on a clean machine: every test that needs a server must skip, not fail (part of make test).
	@rm -rf "$(SHORT_CLEAN_DIR)"; mkdir -p "$(SHORT_CLEAN_DIR)/home" "$(SHORT_CLEAN_DIR)/envtest" "$(SHORT_CLEAN_DIR)/cache"
	env -u KUBECONFIG -u XDG_CACHE_HOME -u XDG_CONFIG_HOME -u KAFKA_BOOTSTRAP_SERVERS \
	  HOME="$(SHORT_CLEAN_DIR)/home" KUBEBUILDER_ASSETS="$(SHORT_CLEAN_DIR)/envtest" CACHE_DIR="$(SHORT_CLEAN_DIR)/cache" \
	  GOCACHE="$(shell go env GOCACHE)" GOMODCACHE="$(shell go env GOMODCACHE)" GOPATH="$(shell go env GOPATH)" GOENV="$(shell go env GOENV)" \
	  go test -short $(GO_TEST_FLAGS) ./...

##@ Build

.PHONY: build
build: ## Build every binary into bin/.
	@mkdir -p $(LOCALBIN)
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(LOCALBIN)/manager .
	for b in dispatcher receiver eventdisplay; do \
	  CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(LOCALBIN)/$$b ./cmd/$$b || exit 1; done
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(LOCALBIN)/localstack ./environments/localstack/cmd/localstack

.PHONY: run
run: manifests generate ## Run the manager against the cluster in ~/.kube/config.
	go run . --leader-elect=false

.PHONY: demo
demo: build envtest $(if $(filter apache,$(KAFKA)),kafka-dist) ## Run the whole system locally (kube-apiserver, Kafka, manager, data plane) and show it working (KAFKA=apache: on real Apache Kafka $(KAFKA_VERSION), KAFKA_BROKERS 1 or 3).
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" CACHE_DIR="$(CACHE_DIR)" KAFKA=$(KAFKA) KAFKA_VERSION=$(KAFKA_VERSION) KAFKA_BROKERS=$(KAFKA_BROKERS) \
	  $(LOCALBIN)/localstack demo --bin $(LOCALBIN)

.PHONY: image-binaries
image-binaries: ## Build the static linux/amd64 binaries the images hold into bin/image (the flags of make build).
	@mkdir -p $(IMAGE_BIN)
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGE_BIN)/manager .
	for b in dispatcher receiver eventdisplay; do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGE_BIN)/$$b ./cmd/$$b || exit 1; done

.PHONY: docker-build
docker-build: image-binaries $(if $(filter crane,$(CONTAINER_TOOL)),crane) ## Build the manager, dispatcher, receiver and eventdisplay images (CONTAINER_TOOL=docker|podman|crane, BASE_IMAGE).
ifeq ($(CONTAINER_TOOL),crane)
	./hack/image/build.sh "$(CRANE)" "$(BASE_IMAGE)" "$(VERSION)" "$(IMAGE_BIN)" "$(IMAGE_OUT)" \
	  manager=$(IMG) dispatcher=$(DISPATCHER_IMG) receiver=$(RECEIVER_IMG) eventdisplay=$(EVENTDISPLAY_IMG)
else
	for t in manager:$(IMG) dispatcher:$(DISPATCHER_IMG) receiver:$(RECEIVER_IMG) eventdisplay:$(EVENTDISPLAY_IMG); do \
	  $(CONTAINER_TOOL) build --target $${t%%:*} --build-arg VERSION=$(VERSION) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	    --build-arg REVISION=$$(git rev-parse HEAD) -t $${t#*:} . || exit 1; done
endif

.PHONY: docker-push
docker-push: $(if $(filter crane,$(CONTAINER_TOOL)),crane) ## Push the four images (to the real cluster's local registry, plain http, while it is up).
ifeq ($(CONTAINER_TOOL),crane)
	for t in manager:$(IMG) dispatcher:$(DISPATCHER_IMG) receiver:$(RECEIVER_IMG) eventdisplay:$(EVENTDISPLAY_IMG); do \
	  ref=$${t#*:}; insecure=; case $$ref in 127.0.0.1:*|localhost:*) insecure=--insecure;; esac; \
	  $(CRANE) push $$insecure $(IMAGE_OUT)/$${t%%:*}.tar $$ref || exit 1; done
else
	for img in $(IMG) $(DISPATCHER_IMG) $(RECEIVER_IMG) $(EVENTDISPLAY_IMG); do $(CONTAINER_TOOL) push $$img || exit 1; done
endif

.PHONY: kind-load
kind-load: ## Load the four images into a kind cluster (KIND_CLUSTER, default kind).
	kind load docker-image --name $(KIND_CLUSTER) $(IMG) $(DISPATCHER_IMG) $(RECEIVER_IMG) $(EVENTDISPLAY_IMG)

##@ Deployment

.PHONY: install
install: manifests ## Install the CRD into the cluster (the real cluster's while it is up, else ~/.kube/config).
	$(KUSTOMIZE) config/crd | $(KUBECTL_ENV) $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests ## Remove the CRD.
	$(KUSTOMIZE) config/crd | $(KUBECTL_ENV) $(KUBECTL) delete --ignore-not-found -f -

# The user's settings (the Kafka Secret, the config-* ConfigMaps: label kafkachannel.knative.dev/
# settings=user) are created when absent and otherwise left alone: applying them again would undo
# what the user changed (docs/security.md patches config-features) or fail on its field owner.
.PHONY: deploy
deploy: manifests ## Deploy the operator (IMG, DISPATCHER_IMG, RECEIVER_IMG) to the cluster (the real cluster's while it is up, else ~/.kube/config); keeps the user's settings.
	@mkdir -p $(LOCALBIN)
	@./hack/render.sh config/default "$(IMG)" "$(DISPATCHER_IMG)" "$(RECEIVER_IMG)" > $(LOCALBIN)/deploy.yaml
	$(KUBECTL_ENV) $(KUBECTL) apply --server-side -l 'kafkachannel.knative.dev/settings!=user' -f $(LOCALBIN)/deploy.yaml
	@out=$$($(KUBECTL_ENV) $(KUBECTL) create -l 'kafkachannel.knative.dev/settings=user' -f $(LOCALBIN)/deploy.yaml 2>&1) || \
	  if echo "$$out" | grep -v AlreadyExists | grep -q .; then echo "$$out"; exit 1; fi; \
	  echo "$$out" | grep -v AlreadyExists || echo "settings (Kafka Secret, config-* ConfigMaps) kept as they are"

.PHONY: undeploy
undeploy: ## Remove the operator.
	@./hack/render.sh config/default "$(IMG)" "$(DISPATCHER_IMG)" "$(RECEIVER_IMG)" | $(KUBECTL_ENV) $(KUBECTL) delete --ignore-not-found -f -

.PHONY: samples
samples: ## Apply config/samples (a subscriber, EVENTDISPLAY_IMG, and a channel delivering to it) to the same cluster as make deploy.
	@./hack/render.sh config/samples "$(IMG)" "$(DISPATCHER_IMG)" "$(RECEIVER_IMG)" "$(EVENTDISPLAY_IMG)" | $(KUBECTL_ENV) $(KUBECTL) apply -f -

.PHONY: bundle
bundle: manifests operator-sdk ## Regenerate the OLM bundle in bundle/.
	./hack/bundle.sh "$(OPERATOR_SDK)" "$(VERSION)" "$(IMG)" "$(DISPATCHER_IMG)" "$(RECEIVER_IMG)"

##@ Real cluster (environments/cluster: a single-node Kubernetes on this machine, root, Linux)

CLUSTER_ENV_VARS = CACHE_DIR="$(CACHE_DIR)" K8S_VERSION=$(ENVTEST_K8S_VERSION) ENVTEST_ASSETS="$(ENVTEST_ASSETS)" CRANE="$(CRANE)" CRANE_VERSION=$(CRANE_VERSION)

.PHONY: cluster-bins
cluster-bins: envtest ## Build kubelet, kube-controller-manager, kube-scheduler, kube-proxy v$(ENVTEST_K8S_VERSION), CoreDNS, a registry and crane into $(CACHE_DIR)/cluster (~20 min the first time on 2 cores).
	@$(CLUSTER_ENV_VARS) ./environments/cluster/bins.sh

.PHONY: cluster
cluster: cluster-bins ## Start a real single-node Kubernetes (containerd, CoreDNS, a registry on 127.0.0.1:5001) in the background; writes .cluster/env (KUBECONFIG, REGISTRY, READY=1).
	@$(CLUSTER_ENV_VARS) ./environments/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## Stop the cluster and undo every change it made to the host.
	@$(CLUSTER_ENV_VARS) ./environments/cluster/down.sh

.PHONY: cluster-check
cluster-check: ## down's iptables undo in a network namespace; on the running cluster: a FROM scratch image from the local registry Ready, a Service from a pod, CoreDNS (CYCLE=1: up, check, down and a clean host, twice; not part of make test).
	@$(CLUSTER_ENV_VARS) ./environments/cluster/check.sh selftest
	@$(CLUSTER_ENV_VARS) ./environments/cluster/check.sh $(if $(CYCLE),cycle,workloads)

##@ On the real cluster (make cluster; CLUSTER_ENV names its env file)

CLUSTER_KAFKA_DIR ?= $(CURDIR)/.cluster-kafka
KAFKA_NODE_PORT ?= 19092
CLUSTER_TEST_FLAGS ?= -timeout 40m

.PHONY: cluster-kafka
cluster-kafka: kafka-dist ## Run Apache Kafka $(KAFKA_VERSION) on the cluster node's address, outside the cluster (as a managed Kafka), named kafka.kafka.svc.cluster.local:9092 inside it.
	@[ -n "$(CLUSTER_KUBECONFIG)" ] || { echo "no ready cluster at $(CLUSTER_ENV) (make cluster, or CLUSTER_ENV=path)"; exit 1; }
	@$(KUBECTL_ENV) KUBECTL="$(KUBECTL)" CACHE_DIR="$(CACHE_DIR)" KAFKA_VERSION=$(KAFKA_VERSION) KAFKA_NODE_PORT=$(KAFKA_NODE_PORT) \
	  ./hack/kafka/node.sh up "$(CLUSTER_KAFKA_DIR)"

.PHONY: cluster-kafka-down
cluster-kafka-down: ## Stop the Apache Kafka of make cluster-kafka.
	@$(KUBECTL_ENV) KUBECTL="$(KUBECTL)" ./hack/kafka/node.sh down "$(CLUSTER_KAFKA_DIR)"

.PHONY: test-cluster
test-cluster: docker-build docker-push deploy cluster-kafka crane ## The story on real pods (test/cluster): images, make deploy, Kafka on the node, faults, probes, RBAC, logs; needs make cluster (not part of make test).
	@[ -n "$(CLUSTER_KUBECONFIG)" ] || { echo "no ready cluster at $(CLUSTER_ENV) (make cluster, or CLUSTER_ENV=path)"; exit 1; }
	CLUSTER_ENV="$(CLUSTER_ENV)" EVENTDISPLAY_IMG="$(EVENTDISPLAY_IMG)" CRANE="$(CRANE)" KAFKA_NODE_PORT=$(KAFKA_NODE_PORT) KAFKACHANNEL_CLUSTER=1 \
	  go test ./test/cluster -count=1 -v $(CLUSTER_TEST_FLAGS) 2>&1 | tee $(LOCALBIN)/test-cluster.log

##@ OLM on the real cluster (make cluster; docs/install-olm.md)

# OLM and opm, built from the Go module proxy (hack/olm/build-bins.sh) into FROM-scratch images
# in the cluster's registry; OLM installed from its own release manifests in the module cache.
OLM_VERSION ?= v0.38.0
OPM_VERSION ?= v1.65.0
OLM_BIN ?= $(CACHE_DIR)/olm/bin-$(OLM_VERSION)-opm-$(OPM_VERSION)
OLM_IMG = $(CLUSTER_REGISTRY)/olm/olm:$(OLM_VERSION)
OPM_IMG = $(CLUSTER_REGISTRY)/olm/opm:$(OPM_VERSION)
# The OLM-installed operator's images and bundles: a repository and a namespace of their own, so
# a make deploy on the same cluster keeps its images and its namespace.
OLM_IMAGE_REGISTRY = $(CLUSTER_REGISTRY)/kafkachannel-olm
OLM_NAMESPACE ?= kafkachannel-olm
OLM_NEXT_VERSION ?= 0.1.1
OLM_WORK ?= $(LOCALBIN)/olm

.PHONY: olm-bins
olm-bins: ## Build OLM's olm, catalog, package-server, copy-content, cpb and opm from the module proxy into $(OLM_BIN) (~12 min cold).
	@./hack/olm/build-bins.sh "$(OLM_BIN)" $(OLM_VERSION) $(OPM_VERSION) 1.25.7

.PHONY: olm-install
olm-install: olm-bins crane ## Install OLM $(OLM_VERSION) on the real cluster (its olm and opm images built here).
	@[ -n "$(CLUSTER_KUBECONFIG)" ] || { echo "no ready cluster at $(CLUSTER_ENV) (make cluster, or CLUSTER_ENV=path)"; exit 1; }
	@./hack/olm/images.sh "$(CRANE)" "$(OLM_BIN)" "$(CACHE_DIR)/olm" "$(OLM_IMG)" "$(OPM_IMG)"
	@$(KUBECTL_ENV) KUBECTL="$(KUBECTL)" ./hack/olm/install.sh install $(OLM_VERSION) "$(OLM_IMG)" "$(OPM_IMG)"

.PHONY: olm-uninstall
olm-uninstall: ## Remove OLM from the real cluster.
	@$(KUBECTL_ENV) KUBECTL="$(KUBECTL)" ./hack/olm/install.sh uninstall $(OLM_VERSION) "$(OLM_IMG)" "$(OPM_IMG)"

# One bundle per version: the operator's images under OLM_IMAGE_REGISTRY, the bundle generated
# into OLM_WORK/VERSION (bundle/ stays the release one) and its image pushed.
olm-bundle-%: operator-sdk crane
	$(MAKE) -s docker-build docker-push VERSION=$* IMAGE_REGISTRY=$(OLM_IMAGE_REGISTRY) IMAGE_OUT=$(OLM_WORK)/images-$*
	@./hack/bundle.sh "$(OPERATOR_SDK)" $* $(OLM_IMAGE_REGISTRY)/kafkachannel-manager:v$* \
	  $(OLM_IMAGE_REGISTRY)/kafkachannel-dispatcher:v$* $(OLM_IMAGE_REGISTRY)/kafkachannel-receiver:v$* $(OLM_WORK)/$* >/dev/null
	@./hack/olm/bundle-image.sh "$(CRANE)" $(OLM_WORK)/$* $(OLM_IMAGE_REGISTRY)/kafkachannel-bundle:v$*

.PHONY: test-olm
test-olm: olm-install olm-bundle-$(VERSION) olm-bundle-$(OLM_NEXT_VERSION) cluster-kafka ## OLM installs the bundle (operator-sdk run bundle), a channel delivers, then run bundle-upgrade under load loses nothing (not part of make test).
	CLUSTER_ENV="$(CLUSTER_ENV)" EVENTDISPLAY_IMG="$(OLM_IMAGE_REGISTRY)/kafkachannel-eventdisplay:v$(VERSION)" CRANE="$(CRANE)" \
	  KAFKACHANNEL_CLUSTER=1 KAFKACHANNEL_OLM=1 OPERATOR_SDK="$(OPERATOR_SDK)" OPM_IMG="$(OPM_IMG)" OLM_NAMESPACE=$(OLM_NAMESPACE) \
	  BUNDLE_IMG=$(OLM_IMAGE_REGISTRY)/kafkachannel-bundle:v$(VERSION) BUNDLE_IMG_NEXT=$(OLM_IMAGE_REGISTRY)/kafkachannel-bundle:v$(OLM_NEXT_VERSION) \
	  go test ./test/cluster -run TestOLMInstallAndUpgrade -count=1 -v -timeout 40m 2>&1 | tee $(LOCALBIN)/test-olm.log

##@ Tools (pinned, built from the Go module proxy into $(TOOLBIN))

.PHONY: kafka-dist
kafka-dist: ## Assemble Apache Kafka $(KAFKA_VERSION) (broker and tools) from Maven Central into $(CACHE_DIR)/kafka-<version> (cached; needs java and mvn).
	@./hack/kafka/dist.sh $(KAFKA_VERSION) $(CACHE_DIR)/kafka-$(KAFKA_VERSION)

.PHONY: envtest
envtest: $(ENVTEST_ASSETS)/kube-apiserver ## Build kube-apiserver and etcd for envtest (~10 min the first time on 2 cores).
$(ENVTEST_ASSETS)/kube-apiserver:
	K8S_VERSION=$(ENVTEST_K8S_VERSION) ETCD_VERSION=$(ENVTEST_ETCD_VERSION) ./hack/build-envtest.sh "$(ENVTEST_ASSETS)"

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	@echo "building controller-gen $(CONTROLLER_TOOLS_VERSION) (about 2 minutes, once per machine)"
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: crane
crane: $(CRANE)
$(CRANE):
	@echo "building crane $(CRANE_VERSION) (about 20 seconds, once per machine)"
	$(call go-install-tool,$(CRANE),github.com/google/go-containerregistry/cmd/crane,$(CRANE_VERSION))

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT):
	@echo "building golangci-lint $(GOLANGCI_LINT_VERSION) (about 3 minutes, once per machine)"
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

.PHONY: operator-sdk
operator-sdk: $(OPERATOR_SDK)
$(OPERATOR_SDK):
	@echo "building operator-sdk $(OPERATOR_SDK_VERSION) (about 7 minutes, once per machine)"
	./hack/build-operator-sdk.sh "$(OPERATOR_SDK)" "$(OPERATOR_SDK_VERSION)"

.PHONY: kcat
kcat: ## Install kcat (a librdkafka client) for the interop tests, from Debian's packages.
	@command -v kcat >/dev/null || { echo "installing kcat (Debian package)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq kcat >/dev/null; }

# go-install-tool builds a pinned tool into a versioned file name.
define go-install-tool
@[ -f "$(1)" ] || { set -e; mkdir -p $(dir $(1)); \
  d=$$(mktemp -d); GOBIN=$$d go install $(2)@$(3); mv "$$d"/* "$(1)"; rm -rf "$$d"; }
endef

##@ Knative on the real cluster (make cluster; CLUSTER_ENV names its env file)

.PHONY: knative-install
knative-install: crane ## Build Knative Eventing $(KNATIVE_VERSION)'s controller and webhook from the module proxy into images in the cluster's registry and install its config/core there (docs/knative-compatibility.md).
	KNATIVE_VERSION=$(KNATIVE_VERSION) CACHE_DIR="$(CACHE_DIR)" CRANE="$(CRANE)" ./hack/knative-cluster.sh install

.PHONY: knative-uninstall
knative-uninstall: ## Remove what make knative-install installed (namespace knative-eventing, Knative's CRDs, roles and webhooks).
	KNATIVE_VERSION=$(KNATIVE_VERSION) CACHE_DIR="$(CACHE_DIR)" CRANE="$(CRANE)" ./hack/knative-cluster.sh uninstall

.PHONY: test-conformance
test-conformance: knative-install ## Knative's rekt channel conformance suite (knative.dev/eventing $(KNATIVE_VERSION) test/rekt) against KafkaChannel on the real cluster; needs the operator deployed (make deploy); log in bin/test-conformance.log.
	@mkdir -p $(LOCALBIN)
	KNATIVE_VERSION=$(KNATIVE_VERSION) CACHE_DIR="$(CACHE_DIR)" CRANE="$(CRANE)" ./hack/knative-cluster.sh conformance $(CONFORMANCE_TESTS) 2>&1 | tee $(LOCALBIN)/test-conformance.log

.PHONY: test-conformance-oidc
test-conformance-oidc: knative-install ## The rekt TestChannelImplSupportsOIDC against KafkaChannel with authentication-oidc enabled in Knative's and the operator's config-features for the run (both restored after, checked); log in bin/test-conformance-oidc.log.
	@mkdir -p $(LOCALBIN)
	KNATIVE_VERSION=$(KNATIVE_VERSION) CACHE_DIR="$(CACHE_DIR)" CRANE="$(CRANE)" ./hack/knative-cluster.sh conformance-oidc 2>&1 | tee $(LOCALBIN)/test-conformance-oidc.log
