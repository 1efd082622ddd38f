#!/usr/bin/env bash
# Fuzz the request-path parsers (cargo-fuzz / libFuzzer) for a bounded time per target.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]          default 30 (tests/run.sh runs it that way, as root)
#   FUZZ_TARGETS="json_patch selectors" fuzz/run.sh 1800   some targets, longer
#
# Targets (fuzz/fuzz_targets/): json_body, protobuf_body (API request bodies through decoding,
# kind/type checks, create/update/delete preparation and the rendered answer), json_patch,
# merge_patch, strategic_merge_patch (PATCH bodies applied to stored objects), selectors (list/watch
# URLs, label and field selectors), cni_config (the CNI plugin's stdin config).
#
# Builds every target once (`cargo +nightly fuzz build`, its own target dir, as root
# /var/cache/berth/fuzz-target so CI's fresh clone reuses it, else fuzz/target; never the
# workspace's), then runs each one after the other (the machine may have only 2 cores) from the
# committed seeds fuzz/corpus/<target>/ (read only) plus a working corpus
# <fuzz target dir>/corpus/<target>/ kept between runs. A crash, a hang (> FUZZ_TIMEOUT s per input,
# default 10) or memory over 2 GiB stops with exit status 1 and prints the artifact to reproduce:
#   cargo +nightly fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/<file>
#
# Environment: FUZZ_TARGETS (space separated subset), FUZZ_SANITIZER (address|none, default none:
# safe Rust, panics/overflows/hangs/OOM are what we look for; `address` also builds with ASan),
# FUZZ_TIMEOUT (seconds per input before it counts as a hang, default 10).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
BERTH_LOG_TAG=fuzz/run.sh
# shellcheck source=../packaging/lib.sh
source packaging/lib.sh

secs="${1:-30}"
[[ "$secs" =~ ^[0-9]+$ && "$secs" -gt 0 ]] || berth_die "SECONDS_PER_TARGET must be a positive integer, got '$secs'"
all_targets=(json_body protobuf_body json_patch merge_patch strategic_merge_patch selectors cni_config)
read -r -a targets <<<"${FUZZ_TARGETS:-${all_targets[*]}}"
sanitizer="${FUZZ_SANITIZER:-none}"

# Largest input per target: request bodies up to 64 KiB; URLs and CNI configs are smaller.
max_len() {
	case "$1" in
	selectors) echo 8192 ;;
	cni_config) echo 16384 ;;
	*) echo 65536 ;;
	esac
}

berth_ensure_cargo_fuzz
# The build lives outside the clone (like upstream/build.sh's Go cache) so a fresh CI clone reuses it;
# not root: inside the tree.
if [[ $EUID -eq 0 ]]; then
	export CARGO_TARGET_DIR="${BERTH_FUZZ_TARGET_DIR:-${BERTH_UPSTREAM_CACHE:-/var/cache/berth}/fuzz-target}"
else
	export CARGO_TARGET_DIR="${BERTH_FUZZ_TARGET_DIR:-$root/fuzz/target}"
fi
start=$SECONDS
berth_log "building ${#targets[@]} fuzz targets (sanitizer $sanitizer) into $CARGO_TARGET_DIR"
buildlog="$CARGO_TARGET_DIR/logs/build.log"
mkdir -p "$(dirname "$buildlog")"
if ! cargo +nightly fuzz build --fuzz-dir "$root/fuzz" --sanitizer "$sanitizer" --codegen-units "${FUZZ_CODEGEN_UNITS:-16}" >"$buildlog" 2>&1; then
	tail -40 "$buildlog" >&2
	berth_die "cargo fuzz build failed (log $buildlog)"
fi
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bindir="$CARGO_TARGET_DIR/$triple/release"
for t in "${targets[@]}"; do
	[[ -x "$bindir/$t" ]] || berth_die "fuzz target $t was not built ($bindir/$t missing)"
done
berth_log "built in $((SECONDS - start)) s"

failed=()
for t in "${targets[@]}"; do
	seeds="$root/fuzz/corpus/$t"
	work="$CARGO_TARGET_DIR/corpus/$t"
	artifacts="$root/fuzz/artifacts/$t"
	log="$CARGO_TARGET_DIR/logs/$t.log"
	mkdir -p "$work" "$artifacts" "$(dirname "$log")"
	berth_log "fuzzing $t for $secs s (log $log)"
	rc=0
	"$bindir/$t" "$work" "$seeds" \
		-max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 \
		-timeout="${FUZZ_TIMEOUT:-10}" -max_len="$(max_len "$t")" \
		-artifact_prefix="$artifacts/" -print_final_stats=1 \
		>"$log" 2>&1 || rc=$?
	stats="$(grep -E '^stat::number_of_executed_units|^stat::average_exec_per_sec|^stat::peak_rss_mb' "$log" |
		sed 's/^stat:://' | tr '\n' ' ')"
	if ((rc != 0)); then
		artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)"
		grep -E 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -5 >&2 || true
		berth_log "FAILED: $t (exit $rc) $stats"
		berth_log "  artifact: ${artifact:-none written, see $log}"
		berth_log "  reproduce: cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer $sanitizer $t ${artifact:-<artifact>}"
		failed+=("$t")
	else
		berth_log "ok: $t $stats"
	fi
done

berth_log "finished in $((SECONDS - start)) s"
if ((${#failed[@]})); then
	berth_die "fuzz targets failed: ${failed[*]}"
fi
