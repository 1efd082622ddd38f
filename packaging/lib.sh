# shellcheck shell=bash
# Shared by packaging/quickstart.sh and tests/run.sh (sourced, not executed).

# Debian packages Berth needs at run time, to build, and to test.
BERTH_RUNTIME_PKGS=(containerd runc nftables iproute2 util-linux busybox-static)
BERTH_BUILD_PKGS=(protobuf-compiler gcc libc6-dev pkg-config curl ca-certificates)
BERTH_TEST_PKGS=(docker-registry containernetworking-plugins systemd)

berth_log() { echo "[$(date -u +%H:%M:%S)] ${BERTH_LOG_TAG:-berth}: $*" >&2; }
berth_die() {
	berth_log "error: $*"
	exit 1
}

# berth_ensure_packages PKG... : apt-get installs the ones not installed (apt-get update only then).
berth_ensure_packages() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	if [[ $EUID -ne 0 ]]; then
		berth_die "missing Debian packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})"
	fi
	command -v apt-get >/dev/null 2>&1 || berth_die "missing packages ${missing[*]} and no apt-get (Debian 12 expected)"
	berth_log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Puts cargo on PATH (rustup's default location) or fails with a clear message.
berth_ensure_cargo() {
	if ! command -v cargo >/dev/null 2>&1; then
		local h
		for h in "${CARGO_HOME:-}" "$HOME/.cargo" /root/.cargo; do
			if [[ -n "$h" && -x "$h/bin/cargo" ]]; then
				export PATH="$h/bin:$PATH"
				break
			fi
		done
	fi
	command -v cargo >/dev/null 2>&1 ||
		berth_die "cargo not found: install a Rust toolchain (rustup, stable) and put cargo on PATH"
}

# cargo + a nightly toolchain (rustup) + cargo-fuzz (installed from crates.io when missing), for
# fuzz/run.sh. The nightly toolchain itself is not downloaded here: it must be installed.
BERTH_CARGO_FUZZ_VERSION=0.13.2
berth_ensure_cargo_fuzz() {
	berth_ensure_cargo
	command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1 ||
		berth_die "the fuzz targets need a nightly toolchain: rustup toolchain install nightly --profile minimal"
	if ! cargo fuzz --version >/dev/null 2>&1; then
		berth_log "installing cargo-fuzz $BERTH_CARGO_FUZZ_VERSION from crates.io"
		cargo install cargo-fuzz --version "$BERTH_CARGO_FUZZ_VERSION" --locked >&2 ||
			berth_die "cargo install cargo-fuzz failed"
	fi
}

# Exit status 0 when this host may NOT lower oom_score_adj (no CAP_SYS_RESOURCE, e.g. in some
# containers/VMs). containerd's CRI then needs restrict_oom_score_adj = true, else runc fails every
# sandbox with "can't get final child's PID from pipe".
berth_oom_score_adj_restricted() {
	local capeff
	capeff="$(awk '/^CapEff:/ {print $2}' /proc/self/status 2>/dev/null || true)"
	if [[ -n "$capeff" ]] && ((((16#$capeff) >> 24) & 1)) && (
		v="$(cat /proc/self/oom_score_adj)"
		((v > -1000)) && echo $((v - 1)) >/proc/self/oom_score_adj
	) 2>/dev/null; then
		return 1
	fi
	return 0
}

# Exit status 0 when overlayfs mounts work on the filesystem holding DIR.
berth_overlayfs_works() {
	local dir="$1" t rc=1
	mkdir -p "$dir"
	t="$(mktemp -d "$dir/.overlay-probe.XXXXXX")" || return 1
	mkdir -p "$t"/{l,u,w,m}
	if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
		umount "$t/m" && rc=0
	fi
	rm -rf "$t"
	return $rc
}

# Stops PID (SIGTERM, then SIGKILL after N seconds, default 20) and waits for it.
berth_stop_pid() {
	local pid="$1" grace="${2:-20}" i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}
