# gantry's tasks. The two a new user needs:
#   make demo   set up this machine and run the Iris job end to end
#   make test   run every test (unit and integration, on the real engine)
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/gantry-ml/gantry.Version=$(VERSION)
BASE_IMAGE ?= gantry/python-ml:bookworm

.PHONY: all build demo test unit integration services base-image stop-services vet fmt-check clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/gantryd ./cmd/gantry

# services: Debian's docker.io, docker-registry and debootstrap; dockerd; a
# registry on 127.0.0.1:5000; the base image. Each step is skipped when done.
services:
	GANTRY_BASE_IMAGE=$(BASE_IMAGE) scripts/services.sh up

base-image: services

stop-services:
	scripts/services.sh stop

demo: services build
	GANTRY_BASE_IMAGE=$(BASE_IMAGE) scripts/demo.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: the files above need formatting"; exit 1; }
	$(GO) vet ./...

unit: vet
	$(GO) test -short -count=1 -race ./...

integration: services
	GANTRY_BASE_IMAGE=$(BASE_IMAGE) $(GO) test -count=1 -timeout 40m -v ./integration

# test: everything, as CI runs it.
test: services vet
	GANTRY_BASE_IMAGE=$(BASE_IMAGE) $(GO) test -count=1 -timeout 40m ./...

# bench: gantry against the docker CLI workflow, into bench/results (see
# BENCHMARKS.md); e.g. make bench BENCHFLAGS='-runs 5 -heavy-runs 3'.
BENCHFLAGS ?=
.PHONY: bench
bench: services
	GANTRY_BASE_IMAGE=$(BASE_IMAGE) $(GO) run ./bench $(BENCHFLAGS)

# image: gantryd's own image (see the Dockerfile), from static binaries.
IMAGE ?= gantry/gantryd
IMAGE_DIR ?= build/image
.PHONY: image
image:
	rm -rf $(IMAGE_DIR) && mkdir -p $(IMAGE_DIR)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(IMAGE_DIR)/ ./cmd/gantryd ./cmd/gantry
	cp /etc/ssl/certs/ca-certificates.crt $(IMAGE_DIR)/
	docker build -t $(IMAGE) -f Dockerfile $(IMAGE_DIR)

clean:
	rm -rf $(BIN) build

# fuzz: each fuzz target for FUZZTIME (make fuzz FUZZTIME=10m); the seed
# corpora and testdata/fuzz run with the ordinary tests.
FUZZTIME ?= 30s
.PHONY: fuzz
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeSpec$$' -fuzztime $(FUZZTIME) ./api
	# Each unpack touches the disk: run it in memory, and shrink findings briefly.
	TMPDIR=/dev/shm $(GO) test -run '^$$' -fuzz '^FuzzUnpack$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./daemon
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./trainer
	$(GO) test -run '^$$' -fuzz '^FuzzPattern$$' -fuzztime $(FUZZTIME) ./trainer
