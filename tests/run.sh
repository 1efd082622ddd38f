#!/usr/bin/env bash
# Berth's test command (README's second command; .ci/run calls exactly this).
#
#   sudo tests/run.sh [extra args for `cargo test`, e.g. a test name filter]
#
# As root it installs what is missing from Debian (containerd, runc, nftables, iproute2,
# busybox-static, docker-registry, the reference CNI plugins, protoc, gcc, ...), then builds the
# workspace once (debug), builds the OCI test images and the pinned upstream Kubernetes components
# (upstream/build.sh, cached in /var/cache/berth), and runs `cargo test --workspace`: the unit
# tests and the end-to-end tests (network namespaces, a private containerd each, a local registry,
# `berth up`, the real kubectl). Not root: no installs, and the end-to-end tests skip themselves.
# Exits non-zero on any failure.
#
# Environment: BERTH_E2E_KEEP=1 keeps the tests' temp dirs (logs); BERTH_E2E_SKIP=1 skips the
# end-to-end tests; BERTH_E2E_RUST_LOG sets RUST_LOG for `berth up` (default info).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
BERTH_LOG_TAG=tests/run.sh
# shellcheck source=../packaging/lib.sh
source packaging/lib.sh

start=$SECONDS
if [[ $EUID -eq 0 ]]; then
	berth_ensure_packages "${BERTH_RUNTIME_PKGS[@]}" "${BERTH_BUILD_PKGS[@]}" "${BERTH_TEST_PKGS[@]}"
	[[ -x /usr/bin/kubectl ]] || berth_die "/usr/bin/kubectl not found: the end-to-end tests drive the real kubectl"
	# namespaces left by an earlier run that was killed (berth-e2e-<pid>-<n> whose <pid> is gone)
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^berth-e2e-' || true); do
		owner="${ns#berth-e2e-}"
		owner="${owner%%-*}"
		if [[ "$owner" =~ ^[0-9]+$ ]] && ! kill -0 "$owner" 2>/dev/null; then
			berth_log "removing stale netns $ns"
			for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
			ip netns del "$ns" || true
		fi
	done
else
	berth_log "not root: skipping package installs; the end-to-end tests will skip themselves"
fi
berth_ensure_cargo
berth_log "$(cargo --version)"

berth_log "building the workspace and every test and bench target (debug)"
cargo test --workspace --all-targets --no-run

if [[ $EUID -eq 0 ]]; then
	images="$root/target/berth-e2e-images"
	berth_log "building test images into $images"
	bash images/build.sh "$images" >/dev/null
	export BERTH_E2E_IMAGES="$images"
	# real kube-apiserver & co. for the upstream tests, cached outside the clone (/var/cache/berth)
	if ! command -v go >/dev/null 2>&1 && [[ ! -x /usr/local/go/bin/go ]]; then
		berth_die "no Go toolchain (neither /usr/local/go/bin/go nor go on PATH): upstream/build.sh needs Go >= 1.26"
	fi
	berth_log "building the upstream Kubernetes components (upstream/build.sh)"
	bash upstream/build.sh || berth_die "upstream/build.sh failed"
fi

berth_log "running cargo test --workspace"
status=0
cargo test --workspace "$@" || status=$?

# The fuzz targets, a bounded time each (fuzz/run.sh; BERTH_FUZZ_SECONDS per target, default 30),
# as root on a full run (no test filter). Under CI=true a failure fails the run.
if [[ $EUID -eq 0 && $# -eq 0 ]]; then
	berth_log "fuzzing (fuzz/run.sh ${BERTH_FUZZ_SECONDS:-30})"
	if ! bash fuzz/run.sh "${BERTH_FUZZ_SECONDS:-30}"; then
		if [[ "${CI:-}" == true ]]; then
			berth_log "error: fuzz/run.sh failed"
			status=1
		else
			berth_log "warning: fuzz/run.sh failed (an error under CI=true)"
		fi
	fi
fi

berth_log "finished in $((SECONDS - start)) s, cargo test exit status $status"
exit "$status"
