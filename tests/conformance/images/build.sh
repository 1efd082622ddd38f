#!/usr/bin/env bash
# Builds the images the upstream conformance suite (e2e.test v1.37.2) runs, as OCI image archives
# under their upstream names, without docker and without any public registry:
#
#   registry.k8s.io/e2e-test-images/agnhost:2.66.1   upstream/build.sh's static agnhost as /agnhost
#       (+ /agnhost-2 link, ENTRYPOINT /agnhost, CMD pause) on busybox-static applets, with bash,
#       curl, ss, dig, nc (netcat-openbsd), iperf, socat copied from Debian packages with their
#       libraries; /uploads; user-defined-in-image (1000) / group-defined-in-image (50000)
#   registry.k8s.io/e2e-test-images/busybox:1.37.0-2 Debian's busybox-static, an applet link each
#   registry.k8s.io/e2e-test-images/nonroot:1.5      that busybox with USER 1234
#   registry.k8s.io/e2e-test-images/nginx:1.27.0-2   Debian's nginx serving /usr/share/nginx/html on
#   registry.k8s.io/e2e-test-images/nginx:1.28.0-2     :80, logs to stdout/stderr (as the official image)
#   registry.k8s.io/e2e-test-images/kitten:1.8        agnhost + upstream's html/ files, CMD test-webserver
#   registry.k8s.io/e2e-test-images/nautilus:1.8      (idem)
#   registry.k8s.io/pause:3.10.2                      images/pause/pause.c, static
#
# usage: tests/conformance/images/build.sh OUTDIR
#   writes OUTDIR/<name>-<tag>.oci.tar (import with `ctr -n k8s.io images import`), prints the paths.
#   Idempotent: an archive is rebuilt only if the inputs' stamp (this script, the agnhost binary,
#   the Debian package versions) changed.
#
# Debian packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a
# scratch dir: nothing is installed on the host (so nginx's service never starts here).
# The OCI assembly (deterministic tar, blobs, index) is images/build.sh's, sourced from it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
out="${1:-}"
[[ -n "$out" ]] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"

BERTH_LOG_TAG=conformance/images
# shellcheck source=../../../packaging/lib.sh
source "$repo/packaging/lib.sh"
log() { berth_log "$@"; }
die() { berth_die "$@"; }

cache_root="${BERTH_UPSTREAM_CACHE:-/var/cache/berth}"
kube_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$repo/upstream/go.mod")"
bin_dir="$cache_root/upstream/$kube_version/bin"
agnhost_bin="$bin_dir/agnhost"
[[ -x "$agnhost_bin" ]] || die "$agnhost_bin missing: run upstream/build.sh first"
ldd "$agnhost_bin" 2>&1 | grep -q '=>' && die "$agnhost_bin is dynamically linked"
kube_src="$cache_root/go/mod/k8s.io/kubernetes@$kube_version"

berth_ensure_packages busybox-static gcc libc6-dev
BUSYBOX=/bin/busybox

case "$(uname -m)" in
x86_64) ARCH=amd64 ;;
aarch64) ARCH=arm64 ;;
*) die "unsupported machine $(uname -m)" ;;
esac

work="$(mktemp -d "${TMPDIR:-/tmp}/berth-conf-images.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# images/build.sh's helpers (sha, size, json_str_array, det_tar, add_blob, build_image): the part
# of that script between its helper block and its first image.
# shellcheck disable=SC1090
source <(sed -n '/^sha() {/,/^# --- busybox/p' "$repo/images/build.sh")
declare -F build_image >/dev/null || die "could not take build_image from images/build.sh"

# --- Debian packages, unpacked (not installed) -----------------------------------------------
debs=(nginx nginx-common bind9-dnsutils bind9-libs libjemalloc2 libprotobuf-c1 libedit2 liburcu8
	libuv1 libfstrm0 liblmdb0 libmaxminddb0 libjson-c5 libnghttp2-14 libxml2 libkrb5-3 libk5crypto3
	libkrb5support0 libgssapi-krb5-2 libkeyutils1 libicu72 liblzma5 netcat-openbsd libbsd0 libmd0
	iperf socat libwrap0 libssl3)
deb_dir="$cache_root/conformance/debs"
mkdir -p "$deb_dir"
missing=()
versions=""
for p in "${debs[@]}"; do
	v="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ { print $2 }')"
	[[ -n "$v" && "$v" != "(none)" ]] || die "Debian package $p not available (apt-get update?)"
	versions+="$p=$v "
	compgen -G "$deb_dir/${p}_*.deb" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
	log "apt-get download ${missing[*]}"
	(cd "$deb_dir" && apt-get download "${missing[@]}" >/dev/null) || die "apt-get download ${missing[*]} failed"
fi
stage="$work/stage"
mkdir -p "$stage"
for p in "${debs[@]}"; do
	f="$(ls -1 "$deb_dir/${p}"_*.deb | sort -V | tail -n 1)"
	dpkg-deb -x "$f" "$stage"
done
stage_libs="$stage/usr/lib/$(uname -m)-linux-gnu:$stage/lib/$(uname -m)-linux-gnu"

stamp="$(cat "$0" "$agnhost_bin" "$repo/images/pause/pause.c" <(echo "$versions") <(sha256sum "$BUSYBOX") | sha256sum | cut -c1-16)"

# copy_bin ROOT SRC DEST: SRC (host or $stage path) to ROOT/DEST, with every library ldd names
# (copied under the path the loader looks for, symlinks resolved).
copy_bin() {
	local root="$1" src="$2" dest="$3" lib path
	install -D -m 0755 "$src" "$root/$dest"
	while read -r lib; do
		[[ -n "$lib" ]] || continue
		path="${lib#"$stage"}"
		[[ -e "$root/$path" ]] && continue
		install -D -m 0755 "$(readlink -f "$lib")" "$root/$path"
	done < <(LD_LIBRARY_PATH="$stage_libs" ldd "$src" 2>/dev/null |
		awk '/=> not found/ { next } /=>/ { print $3; next } /^\t\// { print $1 }')
	if LD_LIBRARY_PATH="$stage_libs" ldd "$src" 2>/dev/null | grep -q 'not found'; then
		die "$src: libraries not found: $(LD_LIBRARY_PATH="$stage_libs" ldd "$src" | grep 'not found' | tr -d '\t' | tr '\n' ' ')"
	fi
}

busybox_root() { # DIR: busybox-static with an applet link each, passwd/group, tmp
	local d="$1" applet
	mkdir -p "$d"/{bin,etc,tmp,root,proc,sys,dev,var,usr/bin,usr/sbin,sbin}
	install -m 0755 "$BUSYBOX" "$d/bin/busybox"
	while read -r applet; do
		[[ -z "$applet" || "$applet" == busybox || "$applet" == */* ]] && continue
		ln -sf busybox "$d/bin/$applet"
	done < <("$BUSYBOX" --list | sort -u)
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$d/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$d/etc/group"
	printf 'hosts: files dns\n' >"$d/etc/nsswitch.conf"
	chmod 1777 "$d/tmp"
}

PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
built=()
# image REF FILE ROOTFS CONFIG
image() {
	local ref="$1" file="$out/$2" rootfs="$3" cfg="$4"
	if [[ -f "$file" && "$(cat "$file.stamp" 2>/dev/null)" == "$stamp" ]]; then
		built+=("$file")
		return
	fi
	build_image "$ref" "$rootfs" "$cfg" "$file"
	echo "$stamp" >"$file.stamp"
	built+=("$file")
}
fresh() { [[ -f "$out/$1" && "$(cat "$out/$1.stamp" 2>/dev/null)" == "$stamp" ]]; }

E2E=registry.k8s.io/e2e-test-images

# --- busybox, nonroot ------------------------------------------------------------------------
bb="$work/busybox"
busybox_root "$bb"
bb_cfg="{\"Env\":$(json_str_array "$PATH_ENV"),\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\"}"
image "$E2E/busybox:1.37.0-2" busybox-1.37.0-2.oci.tar "$bb" "$bb_cfg"
image "$E2E/nonroot:1.5" nonroot-1.5.oci.tar "$bb" \
	"{\"Env\":$(json_str_array "$PATH_ENV"),\"Cmd\":[\"sh\"],\"User\":\"1234\",\"WorkingDir\":\"/\"}"

# --- pause -----------------------------------------------------------------------------------
if ! fresh pause-3.10.2.oci.tar; then
	pz="$work/pause"
	mkdir -p "$pz"
	gcc -static -Os -s -Wall -Wextra -o "$pz/pause" "$repo/images/pause/pause.c"
	image registry.k8s.io/pause:3.10.2 pause-3.10.2.oci.tar "$pz" \
		"{\"Env\":$(json_str_array "$PATH_ENV"),\"Entrypoint\":[\"/pause\"],\"User\":\"65535:65535\",\"WorkingDir\":\"/\"}"
else
	built+=("$out/pause-3.10.2.oci.tar")
fi

# --- agnhost (+ kitten, nautilus) ------------------------------------------------------------
ag="$work/agnhost"
busybox_root "$ag"
install -m 0755 "$agnhost_bin" "$ag/agnhost"
ln -s agnhost "$ag/agnhost-2"
mkdir -p "$ag/uploads"
copy_bin "$ag" /usr/bin/bash /bin/bash
copy_bin "$ag" /usr/bin/curl /usr/bin/curl
copy_bin "$ag" /usr/bin/ss /usr/bin/ss
copy_bin "$ag" "$stage/usr/bin/dig" /usr/bin/dig
copy_bin "$ag" "$stage/usr/bin/nslookup" /usr/bin/nslookup
copy_bin "$ag" "$stage/bin/nc.openbsd" /usr/bin/nc
copy_bin "$ag" "$stage/usr/bin/iperf" /usr/bin/iperf
copy_bin "$ag" "$stage/usr/bin/socat" /usr/bin/socat
mkdir -p "$ag/usr/local/bin"
ln -sf /usr/bin/iperf "$ag/usr/local/bin/iperf"
rm -f "$ag/bin/nc" "$ag/bin/nslookup" # the real tools, not busybox's applets
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
	install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$ag/etc/ssl/certs/ca-certificates.crt"
fi
printf 'root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ag/etc/passwd"
printf 'root:x:0:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\nnogroup:x:65534:\n' >"$ag/etc/group"
mkdir -p "$ag/home/user-defined-in-image"
ag_cfg="{\"Env\":$(json_str_array "$PATH_ENV"),\"Entrypoint\":[\"/agnhost\"],\"Cmd\":[\"pause\"],\"WorkingDir\":\"/\",\"ExposedPorts\":{\"80/tcp\":{},\"8080/tcp\":{},\"8081/tcp\":{},\"9376/tcp\":{},\"5000/tcp\":{}}}"
image "$E2E/agnhost:2.66.1" agnhost-2.66.1.oci.tar "$ag" "$ag_cfg"
for pet in kitten nautilus; do
	fresh "$pet-1.8.oci.tar" && { built+=("$out/$pet-1.8.oci.tar"); continue; }
	pr="$work/$pet"
	cp -a "$ag" "$pr"
	cp "$kube_src/test/images/$pet/html/"* "$pr/"
	chmod -R u+w,a+r "$pr"
	image "$E2E/$pet:1.8" "$pet-1.8.oci.tar" "$pr" \
		"{\"Env\":$(json_str_array "$PATH_ENV"),\"Entrypoint\":[\"/agnhost\"],\"Cmd\":[\"test-webserver\"],\"WorkingDir\":\"/\"}"
done

# --- nginx -----------------------------------------------------------------------------------
ng="$work/nginx"
busybox_root "$ng"
copy_bin "$ng" "$stage/usr/sbin/nginx" /usr/sbin/nginx
mkdir -p "$ng"/etc/nginx/conf.d "$ng"/usr/share/nginx/html "$ng"/var/log/nginx "$ng"/var/lib/nginx/{body,proxy,fastcgi,uwsgi,scgi} "$ng"/run "$ng"/var/cache/nginx
cp "$stage/etc/nginx/mime.types" "$ng/etc/nginx/mime.types"
ln -s /dev/stdout "$ng/var/log/nginx/access.log"
ln -s /dev/stderr "$ng/var/log/nginx/error.log"
printf 'root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx user:/nonexistent:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ng/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\nnginx:x:101:\nnogroup:x:65534:\n' >"$ng/etc/group"
cat >"$ng/etc/nginx/nginx.conf" <<'EOF'
user nginx;
worker_processes auto;
error_log /var/log/nginx/error.log notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
EOF
cat >"$ng/etc/nginx/conf.d/default.conf" <<'EOF'
server {
    listen 80;
    listen [::]:80;
    server_name localhost;
    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }
    error_page 500 502 503 504 /50x.html;
    location = /50x.html { root /usr/share/nginx/html; }
}
EOF
printf '<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1></body></html>\n' >"$ng/usr/share/nginx/html/index.html"
printf '<!DOCTYPE html>\n<html><body><h1>An error occurred.</h1></body></html>\n' >"$ng/usr/share/nginx/html/50x.html"
ng_cfg="{\"Env\":$(json_str_array "$PATH_ENV"),\"Cmd\":[\"nginx\",\"-g\",\"daemon off;\"],\"ExposedPorts\":{\"80/tcp\":{}},\"StopSignal\":\"SIGQUIT\",\"WorkingDir\":\"/\"}"
image "$E2E/nginx:1.27.0-2" nginx-1.27.0-2.oci.tar "$ng" "$ng_cfg"
image "$E2E/nginx:1.28.0-2" nginx-1.28.0-2.oci.tar "$ng" "$ng_cfg"

printf '%s\n' "${built[@]}"
