#!/usr/bin/env bash
# The upstream conformance suite against one target, as root:
#
#   tests/conformance/run.sh TARGET [--focus REGEX] [--skip REGEX] [--timeout SECONDS] [--procs N]
#                                   [--out FILE]
#
#   TARGET   berth-up       `berth up` (Berth's control plane + agent) in a network namespace
#            upstream-node  the real control plane (tests/common/upstream.rs) with the upstream
#                           kubelet + kube-proxy (nftables) + Debian's reference CNI plugins
#   --focus  ginkgo --focus (narrows the Conformance label)   --skip  ginkgo --skip
#   --timeout ginkgo --timeout in seconds (default 7200)     --procs ginkgo --procs (default 4)
#   --out    the table (default docs/conformance/conformance-TARGET.md)
#
# It builds what is missing (upstream/build.sh: e2e.test, ginkgo, agnhost, the components;
# tests/conformance/images/build.sh: the images), brings the target up from the Rust test guards
# (tests/conformance.rs, an ignored test per target), runs ginkgo over e2e.test inside the target's
# netns with --label-filter=Conformance, [Serial] specs after the parallel ones, and writes one
# row per spec (name, sig, result, seconds, first failure line) with per-sig totals, from ginkgo's
# JSON report. The guards clean up (netns, processes, temp dirs) also when a step fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$(pwd)"

usage() { sed -n '2,14p' "$0" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
target="$1"
shift
case "$target" in
berth-up) test_name=conformance_berth_up ;;
upstream-node) test_name=conformance_upstream_node ;;
berth-node) echo "run.sh: berth-node is not wired up yet (needs tests/common/join.rs)" >&2; exit 2 ;;
*) usage ;;
esac
out="$root/docs/conformance/conformance-$target.md"
while [[ $# -gt 0 ]]; do
	case "$1" in
	--focus) export BERTH_CONFORMANCE_FOCUS="$2"; shift 2 ;;
	--skip) export BERTH_CONFORMANCE_SKIP="$2"; shift 2 ;;
	--timeout) export BERTH_CONFORMANCE_TIMEOUT="$2"; shift 2 ;;
	--procs) export BERTH_CONFORMANCE_PROCS="$2"; shift 2 ;;
	--out) out="$2"; shift 2 ;;
	*) usage ;;
	esac
done
[[ $EUID -eq 0 ]] || { echo "run.sh: needs root (network namespaces, containerd)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
export BERTH_CONFORMANCE_OUT="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

start=$SECONDS
bash upstream/build.sh
cargo test -p berth --test conformance --no-run
status=0
cargo test -p berth --test conformance -- --ignored --exact --nocapture "$test_name" || status=$?
echo "run.sh: $target finished in $((SECONDS - start)) s (exit $status); table $BERTH_CONFORMANCE_OUT"
exit "$status"
