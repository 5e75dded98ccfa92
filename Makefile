# rig. `make up`: install what is missing and run the whole service. `make test`: lint, types, tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := .run
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := nginx libnginx-mod-rtmp ffmpeg openssl
# `make test` also drives the dashboard in Debian's chromium (never a downloaded browser).
BROWSER_PACKAGES := chromium fonts-dejavu-core
# `make test` pulls a camera: GStreamer's RTSP server (Debian's python3 runs it) with x264.
CAMERA_PACKAGES := gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-ugly python3-gi

# `make up` defaults: one machine is control plane and ingest node (override any of them).
# Exported to `make up` only: `make test` must not inherit a node token file or fixed ports.
up: export DEBUG ?= 1
up: export RIG_API_BIND ?= 127.0.0.1:8000
# The demo's destinations are on loopback: the node may relay there (production: 0, the default).
up: export RIG_ALLOW_PRIVATE_DESTINATIONS ?= 1
up: export RIG_CONTROL_URL ?= http://$(RIG_API_BIND)
up: export RIG_API_URL ?= $(RIG_CONTROL_URL)
up: export RIG_RTMP_PORT ?= 1935
up: export RIG_INGEST_URL ?= rtmp://127.0.0.1:$(RIG_RTMP_PORT)/live
up: export RIG_AGENT_LISTEN ?= 127.0.0.1:8091
up: export RIG_NODE_TOKEN_FILE ?= $(RUN)/node.token
# gunicorn's workers share the hook histogram through files here (emptied at each start)
up: export PROMETHEUS_MULTIPROC_DIR ?= $(CURDIR)/$(RUN)/prometheus

# `make test` talks to the real Postgres and Redis at their default local addresses.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/rig
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: help system-deps browser-deps camera-deps venv up test lint bench bench-api bench-soak wrk clean

help:
	@echo "make up     install what is missing (apt: $(APT_PACKAGES); pip: .venv) and run rig"
	@echo "make test   ruff, mypy and pytest against Postgres and Redis on 127.0.0.1 (and chromium)"
	@echo "make bench  every benchmark (about 20 min), then the goals of issue 14 as one table:"
	@echo "           fan-out vs ffmpeg relays vs nginx-rtmp push, the soak, the API; pull and transcode costs"
	@echo "make bench-soak  150 legs (50 streams x 3) through the fan-out for 10 minutes"
	@echo "make bench-api  agent endpoints (rps) and the publish hook (latency) under gunicorn, Postgres"

system-deps:
	@missing=""; \
	command -v nginx >/dev/null || missing=1; \
	command -v ffmpeg >/dev/null || missing=1; \
	command -v openssl >/dev/null || missing=1; \
	[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || missing=1; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing=1; \
	if [ -n "$$missing" ]; then \
		echo "installing $(APT_PACKAGES) python3-venv from Debian's packages"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			$(APT_PACKAGES) python3-venv >/dev/null; \
	fi

browser-deps:
	@[ -x /usr/lib/chromium/chromium ] || { \
		echo "installing $(BROWSER_PACKAGES) from Debian's packages"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			$(BROWSER_PACKAGES) >/dev/null; }

camera-deps:
	@/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); \
		from gi.repository import Gst; Gst.init(None); \
		assert Gst.ElementFactory.find("x264enc")' 2>/dev/null || { \
		echo "installing $(CAMERA_PACKAGES) from Debian's packages"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			$(CAMERA_PACKAGES) >/dev/null; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

up: system-deps venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py node_create local --token-file $(RIG_NODE_TOKEN_FILE) \
		--rtmp-url $(RIG_INGEST_URL) --agent-url http://$(RIG_AGENT_LISTEN)
	$(BIN)/honcho -f deploy/Procfile -d . start

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=1 $(BIN)/mypy .

test: system-deps browser-deps camera-deps lint
	DEBUG=1 DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest

bench: system-deps camera-deps venv wrk
	$(BIN)/python -m bench.fanout
	$(BIN)/python -m bench.soak
	$(BIN)/python -m bench.api
	$(BIN)/python -m bench.costs
	$(BIN)/python -m bench.goals

bench-soak: system-deps venv
	$(BIN)/python -m bench.soak

bench-api: venv wrk
	$(BIN)/python -m bench.api

wrk:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk >/dev/null; }

clean:
	rm -rf $(RUN) db.sqlite3
