#!/usr/bin/env bash
# Build Berth's local test images as OCI image archives, without docker or a registry:
#   berth.local/busybox:1.35  from Debian's busybox-static (/bin/busybox + an applet symlink each)
#   berth.local/pause:3.10    from images/pause/pause.c (gcc -static)
#   berth.local/busybox-remote:1.35  the same busybox with another /etc/berth-image, hence its own
#                             layer digest: the tests push it to a local registry and delete it
#                             locally, so pulling it downloads the layer for real
#
# usage: images/build.sh OUTDIR
#   writes OUTDIR/busybox.oci.tar, OUTDIR/pause.oci.tar and OUTDIR/busybox-remote.oci.tar (import
#   with `ctr -a SOCK -n k8s.io images import FILE`); prints their paths.
#
# Output is deterministic: sorted tar entries, mtime 0, owner 0:0, `gzip -n`, JSON without
# timestamps, so the same inputs give the same digests.
# On a host without busybox-static / gcc / libc6-dev it installs them with apt-get (root needed).
set -euo pipefail

BUSYBOX_REF="${BUSYBOX_REF:-berth.local/busybox:1.35}"
BUSYBOX_REMOTE_REF="${BUSYBOX_REMOTE_REF:-berth.local/busybox-remote:1.35}"
PAUSE_REF="${PAUSE_REF:-berth.local/pause:3.10}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-}"
if [[ -z "$out" ]]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

BERTH_LOG_TAG=images/build.sh
# shellcheck source=../packaging/lib.sh
source "$here/../packaging/lib.sh"
log() { berth_log "$@"; }
die() { berth_die "$@"; }

# --- tools (busybox-static for the busybox image, gcc + static libc for pause) --------------
berth_ensure_packages busybox-static gcc libc6-dev
BUSYBOX=/bin/busybox
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX not found (package busybox-static)"
if command -v ldd >/dev/null 2>&1 && ldd "$BUSYBOX" 2>&1 | grep -q '=>'; then
	die "$BUSYBOX is dynamically linked; install busybox-static"
fi

case "$(uname -m)" in
x86_64) ARCH=amd64 ;;
aarch64) ARCH=arm64 ;;
armv7l) ARCH=arm ;;
ppc64le) ARCH=ppc64le ;;
s390x) ARCH=s390x ;;
riscv64) ARCH=riscv64 ;;
*) die "unsupported machine $(uname -m)" ;;
esac

work="$(mktemp -d "${TMPDIR:-/tmp}/berth-images.XXXXXX")"
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
json_str_array() { # "a" "b" -> ["a","b"] (inputs must not need escaping beyond quotes)
	local first=1 s
	printf '['
	for s in "$@"; do
		((first)) || printf ','
		first=0
		s="${s//\\/\\\\}"
		printf '"%s"' "${s//\"/\\\"}"
	done
	printf ']'
}

# deterministic tar of the *contents* of DIR to FILE
det_tar() {
	local dir="$1" file="$2"
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
		-C "$dir" -cf "$file" .
}

# put a blob into the layout, echo its digest (hex)
add_blob() {
	local layout="$1" file="$2" d
	d="$(sha "$file")"
	mkdir -p "$layout/blobs/sha256"
	cp "$file" "$layout/blobs/sha256/$d"
	echo "$d"
}

# build_image REF ROOTFS CONFIG_JSON_FRAGMENT OUTFILE
#   CONFIG_JSON_FRAGMENT: the image config's "config" object, e.g. {"Cmd":["sh"]}
build_image() {
	local ref="$1" rootfs="$2" cfg="$3" outfile="$4"
	local name="${ref%:*}" tag="${ref##*:}"
	local img="$work/img-$tag-$RANDOM"
	local layout="$img/layout"
	mkdir -p "$layout"

	det_tar "$rootfs" "$img/layer.tar"
	local diff_id
	diff_id="$(sha "$img/layer.tar")"
	gzip -n -9 <"$img/layer.tar" >"$img/layer.tar.gz"
	local layer_digest layer_size
	layer_digest="$(add_blob "$layout" "$img/layer.tar.gz")"
	layer_size="$(size "$img/layer.tar.gz")"

	printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"berth images/build.sh","comment":"%s"}]}' \
		"$ARCH" "$cfg" "$diff_id" "$ref" >"$img/config.json"
	local config_digest config_size
	config_digest="$(add_blob "$layout" "$img/config.json")"
	config_size="$(size "$img/config.json")"

	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
		"$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$img/manifest.json"
	local manifest_digest manifest_size
	manifest_digest="$(add_blob "$layout" "$img/manifest.json")"
	manifest_size="$(size "$img/manifest.json")"

	printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
		"$manifest_digest" "$manifest_size" "$ARCH" "$ref" "$tag" >"$layout/index.json"

	det_tar "$layout" "$outfile.tmp"
	mv -f "$outfile.tmp" "$outfile"
	log "$ref -> $outfile (manifest sha256:$manifest_digest, $(size "$outfile") bytes; name $name)"
}

# --- busybox -------------------------------------------------------------------------------
bb="$work/busybox-rootfs"
mkdir -p "$bb"/{bin,etc,tmp,root,var/www,proc,sys,dev}
install -m 0755 "$BUSYBOX" "$bb/bin/busybox"
while read -r applet; do
	[[ -z "$applet" || "$applet" == busybox ]] && continue
	[[ "$applet" == */* ]] && continue
	ln -sf busybox "$bb/bin/$applet"
done < <("$BUSYBOX" --list | sort -u)
[[ -L "$bb/bin/sh" && -L "$bb/bin/httpd" && -L "$bb/bin/nc" && -L "$bb/bin/hostname" ]] ||
	die "busybox lacks one of sh/httpd/nc/hostname"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$bb/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$bb/etc/group"
# so `httpd -f -p 8080` (cwd /) and `httpd -h /var/www` both serve a known page
printf 'berth busybox\n' >"$bb/index.html"
printf 'berth busybox\n' >"$bb/var/www/index.html"
printf '%s\n' "$BUSYBOX_REF" >"$bb/etc/berth-image"
chmod 0755 "$bb" "$bb"/{bin,etc,root,var,var/www,proc,sys,dev}
chmod 0644 "$bb/etc/passwd" "$bb/etc/group" "$bb/index.html" "$bb/var/www/index.html" "$bb/etc/berth-image"
chmod 1777 "$bb/tmp"
bb_cfg="{\"Env\":$(json_str_array "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\"}"
build_image "$BUSYBOX_REF" "$bb" "$bb_cfg" "$out/busybox.oci.tar"
printf '%s\n' "$BUSYBOX_REMOTE_REF" >"$bb/etc/berth-image"
build_image "$BUSYBOX_REMOTE_REF" "$bb" "$bb_cfg" "$out/busybox-remote.oci.tar"

# --- pause ---------------------------------------------------------------------------------
pz="$work/pause-rootfs"
mkdir -p "$pz"
gcc -static -Os -s -Wall -Wextra -o "$pz/pause" "$here/pause/pause.c"
chmod 0755 "$pz" "$pz/pause"
build_image "$PAUSE_REF" "$pz" \
	"{\"Env\":$(json_str_array "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),\"Entrypoint\":[\"/pause\"],\"WorkingDir\":\"/\"}" \
	"$out/pause.oci.tar"

echo "$out/busybox.oci.tar"
echo "$out/pause.oci.tar"
echo "$out/busybox-remote.oci.tar"
