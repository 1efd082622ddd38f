#!/usr/bin/env bash
# Builds the pinned upstream Kubernetes components and etcd (upstream/go.mod) into a cache outside
# the clone, /var/cache/berth/upstream/<version>/bin, so a fresh CI clone reuses them. The Go
# toolchain fetches the source as modules from the module proxy; none of it enters this tree.
#
#   bash upstream/build.sh            build what is missing or stale, print what it did
#   BERTH_UPSTREAM_CACHE=/dir ...     cache root (default /var/cache/berth)
#   BERTH_GO_P=1 ...                  go build -p (default: Go's, i.e. the number of cores)
#
# Also the conformance suite (tests/conformance/): e2e.test (`go test -c k8s.io/kubernetes/test/e2e`,
# the same tags and version stamp as upstream's hack/lib/golang.sh gives its test targets), ginkgo
# (the version k8s.io/kubernetes's go.mod pins) and agnhost (static, like its image).
#
# Idempotent: every binary carries a stamp of go.mod, go.sum and the build flags; when all of them
# exist with a matching stamp the script returns at once. Builds run under `nice -n 10` so other
# builds on the machine (cargo) are not starved.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${BERTH_UPSTREAM_CACHE:-/var/cache/berth}"

die() { echo "upstream/build.sh: error: $*" >&2; exit 1; }

# --- Go toolchain ----------------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
        PATH="/usr/local/go/bin:$PATH"
    else
        die "no Go toolchain: neither /usr/local/go/bin/go nor 'go' on PATH (need Go >= 1.26)"
    fi
fi
go_version="$(go env GOVERSION)"
# go.mod says `go 1.26.0`; never let the go command download another toolchain.
export GOTOOLCHAIN=local
case "$go_version" in
    go1.2[6-9]*|go1.[3-9][0-9]*) ;;
    *) die "Go $go_version is too old for k8s.io/kubernetes in upstream/go.mod (need >= go1.26)" ;;
esac

export GOPATH="$cache_root/go"
export GOMODCACHE="$cache_root/go/mod"
export GOCACHE="$cache_root/go/cache"
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0

# --- versions --------------------------------------------------------------------------------
mod_version() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"; }
kube_version="$(mod_version k8s.io/kubernetes)"
etcd_version="$(mod_version go.etcd.io/etcd/server/v3)"
[[ -n "$kube_version" && -n "$etcd_version" ]] || die "cannot read the pinned versions from $here/go.mod"
kube_major="${kube_version#v}"; kube_major="${kube_major%%.*}"
kube_minor="${kube_version#v*.}"; kube_minor="${kube_minor%%.*}"

bin_dir="$cache_root/upstream/$kube_version/bin"
mkdir -p "$bin_dir" "$GOMODCACHE" "$GOCACHE"

# Tags and flags of upstream's hack/lib/golang.sh for a release build (static, no debug info).
tags="selinux,notest,grpcnotrace"
flags_id="tags=$tags trimpath -s -w CGO_ENABLED=0 $go_version"
# (comment lines of go.mod do not count)
stamp="$(cat <(grep -v '^[[:space:]]*//' "$here/go.mod") "$here/go.sum" <(echo "$flags_id") | sha256sum | cut -d' ' -f1)"

# name  package
targets=(
    "kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver"
    "etcd go.etcd.io/etcd/server/v3"
    "kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager"
    "kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler"
    "kubectl k8s.io/kubernetes/cmd/kubectl"
    "kubelet k8s.io/kubernetes/cmd/kubelet"
    "kube-proxy k8s.io/kubernetes/cmd/kube-proxy"
    "ginkgo github.com/onsi/ginkgo/v2/ginkgo"
    "agnhost k8s.io/kubernetes/test/images/agnhost"
    "e2e.test k8s.io/kubernetes/test/e2e"
)

up_to_date() { [[ -x "$bin_dir/$1" && "$(cat "$bin_dir/.$1.stamp" 2>/dev/null)" == "$stamp" ]]; }

all_fresh() {
    local t
    for t in "${targets[@]}"; do up_to_date "${t%% *}" || return 1; done
}

report() {
    echo "upstream: Kubernetes $kube_version, etcd $etcd_version ($go_version) in $bin_dir"
}

if all_fresh; then
    report
    echo "upstream: all ${#targets[@]} binaries up to date (stamp ${stamp:0:12})"
    exit 0
fi

# One build at a time per cache (parallel test runs, CI and a developer on the same machine).
exec 9>"$cache_root/upstream/.build.lock"
flock 9
all_fresh && { report; echo "upstream: built by a concurrent run"; exit 0; }

# Version stamping as upstream's hack/lib/version.sh does it; buildDate is the release's
# module time so that the same pin gives the same binaries.
mod_time="$(cd "$here" && go list -m -f '{{.Time}}' k8s.io/kubernetes)"
build_date="$(date -u -d "${mod_time% UTC}" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
kube_ldflags=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    kube_ldflags+=" -X '$pkg.gitVersion=$kube_version'"
    kube_ldflags+=" -X '$pkg.gitMajor=$kube_major' -X '$pkg.gitMinor=$kube_minor'"
    kube_ldflags+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=$build_date'"
done
etcd_ldflags="-X 'go.etcd.io/etcd/api/v3/version.GitSHA=$etcd_version'"

p_flag=()
[[ -n "${BERTH_GO_P:-}" ]] && p_flag=(-p "$BERTH_GO_P")

report
total_start=$SECONDS
built=()
for t in "${targets[@]}"; do
    name="${t%% *}"
    pkg="${t#* }"
    if up_to_date "$name"; then
        echo "upstream: $name up to date"
        continue
    fi
    if [[ "$name" == etcd ]]; then ldflags="$etcd_ldflags"; else ldflags="$kube_ldflags"; fi
    echo "upstream: building $name ($pkg) ..."
    start=$SECONDS
    # e2e.test is the test binary of package test/e2e (its e2e_test.go holds TestMain).
    if [[ "$name" == *.test ]]; then go_cmd=(test -c); else go_cmd=(build); fi
    (cd "$here" && nice -n 10 go "${go_cmd[@]}" "${p_flag[@]}" -trimpath -tags "$tags" \
        -ldflags "all=$ldflags -s -w" -o "$bin_dir/.$name.tmp" "$pkg") \
        || die "go ${go_cmd[*]} of $name ($pkg) failed"
    mv -f "$bin_dir/.$name.tmp" "$bin_dir/$name"
    echo "$stamp" > "$bin_dir/.$name.stamp"
    secs=$((SECONDS - start))
    built+=("$name ${secs}s")
    echo "upstream: built $name in ${secs}s ($(du -h "$bin_dir/$name" | cut -f1))"
done

echo "upstream: built ${#built[@]} of ${#targets[@]} in $((SECONDS - total_start))s: ${built[*]:-nothing}"
"$bin_dir/kube-apiserver" --version
"$bin_dir/etcd" --version | head -n 1
