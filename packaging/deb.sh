#!/usr/bin/env bash
# Builds Berth's Debian package with cargo-deb (its contents: [package.metadata.deb] in Cargo.toml):
# berth and berth-control-plane in /usr/bin, berth-cni in /opt/cni/bin, the systemd units, a
# commented /etc/berth/config.toml, maintainer scripts from packaging/deb/.
#
#   packaging/deb.sh                 cargo build --release of the three binaries, then the .deb
#   packaging/deb.sh --from DIR      package the binaries already built in DIR (e.g. target/debug:
#                                    the tests reuse their own build instead of a second one)
#   --output DIR                     where the .deb goes (default target/debian)
#
# cargo-deb is installed with `cargo install cargo-deb --locked` (crates.io) when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BERTH_LOG_TAG=packaging/deb.sh
# shellcheck source=lib.sh
source packaging/lib.sh

from="" output="target/debian"
while (($#)); do
	case "$1" in
	--from) from="$2"; shift 2 ;;
	--output) output="$2"; shift 2 ;;
	*) berth_die "unknown argument $1 (see the header of $0)" ;;
	esac
done

berth_ensure_cargo
if ! cargo deb --version >/dev/null 2>&1; then
	berth_log "installing cargo-deb (cargo install cargo-deb --locked)"
	cargo install cargo-deb --locked >&2 || berth_die "cargo-deb unavailable: cargo install cargo-deb --locked failed"
fi

bins=(berth berth-control-plane berth-cni)
mkdir -p "$output"
if [[ -z "$from" ]]; then
	berth_log "building the release binaries"
	cargo build --release -p berth -p berth-cni --bins >&2
	cargo deb -p berth --no-build --output "$output" >&2
else
	# cargo-deb reads binaries from <target dir>/release/ (it rewrites the assets' target/release/
	# prefix): stage copies of the given ones there (cargo-deb strips them).
	stage="$(mktemp -d)"
	trap 'rm -rf "$stage"' EXIT
	mkdir -p "$stage/release"
	for b in "${bins[@]}"; do
		[[ -x "$from/$b" ]] || berth_die "$from/$b missing: build it first (cargo build -p berth -p berth-cni --bins)"
		cp --reflink=auto "$from/$b" "$stage/release/$b"
	done
	CARGO_TARGET_DIR="$stage" cargo deb -p berth --no-build --strip --fast --output "$output" >&2
fi
ls "$output"/*.deb
