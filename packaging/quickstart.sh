#!/usr/bin/env bash
# Berth quick start (README's first command), for a Debian 12 host, as root:
#
#   sudo packaging/quickstart.sh          # install, build, start containerd + `berth up`, wait Ready
#   sudo packaging/quickstart.sh --stop   # stop `berth up` and the containerd this script started
#
# 1. installs what is missing from Debian (containerd, runc, nftables, iproute2, busybox-static,
#    protoc, gcc, ...; `apt-get update` only when something is missing);
# 2. builds the release binaries and installs berth + berth-control-plane into $PREFIX/bin and
#    berth-cni into the CNI bin dir /opt/cni/bin (+ `loopback` -> berth-cni only if absent);
# 3. starts containerd if it is not answering on its socket (no systemd needed): in the background,
#    log /var/log/berth-containerd.log, with Berth's own config /etc/berth/containerd.toml (CRI:
#    sandbox_image berth.local/pause:3.10, CNI dirs, restrict_oom_score_adj when this host cannot
#    lower oom_score_adj). /etc/containerd/config.toml is never modified. If containerd is already
#    running it is used as it is (its sandbox image name is pointed at Berth's pause image);
# 4. builds the local images berth.local/busybox:1.35 and berth.local/pause:3.10 (images/build.sh)
#    and imports them, so a first pod needs no registry;
# 5. starts `berth up` in the background (state /var/lib/berth, log /var/log/berth.log), waits until
#    the node is Ready, and prints the admin kubeconfig path and a first kubectl command.
#
# Overrides (environment), mostly so the tests can run this script inside a network namespace
# without touching the host:
#   BERTH_NETNS=NAME             run containerd, berth up and kubectl inside /var/run/netns/NAME
#   BERTH_STATE_DIR              /var/lib/berth            BERTH_LOG        /var/log/berth.log
#   BERTH_RUN_DIR                /run/berth (pid files)    BERTH_PREFIX     /usr/local
#   BERTH_CNI_BIN_DIR            /opt/cni/bin              BERTH_CNI_CONF_DIR  /etc/cni/net.d
#   BERTH_CNI_DATA_DIR           /var/lib/cni/networks     BERTH_POD_LOG_DIR   /var/log/pods
#   BERTH_CONTAINERD_SOCKET      /run/containerd/containerd.sock
#   BERTH_CONTAINERD_CONFIG      /etc/berth/containerd.toml (written only when starting containerd)
#   BERTH_CONTAINERD_ROOT/STATE  /var/lib/containerd, /run/containerd (only when starting it)
#   BERTH_CONTAINERD_LOG         /var/log/berth-containerd.log
#   BERTH_NODE_NAME, BERTH_NODE_IP, BERTH_LISTEN (host:port of the API server, default 0.0.0.0:6443)
#   BERTH_BUILD_PROFILE          release | debug           BERTH_SKIP_BUILD=1 with BERTH_BIN_DIR=DIR
#   BERTH_SKIP_PACKAGES=1        do not check/install Debian packages
#   BERTH_READY_TIMEOUT          seconds to wait for the node to be Ready (default 180)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
BERTH_LOG_TAG=quickstart
# shellcheck source=lib.sh
source "$here/lib.sh"

NETNS="${BERTH_NETNS:-}"
STATE_DIR="${BERTH_STATE_DIR:-/var/lib/berth}"
LOG="${BERTH_LOG:-/var/log/berth.log}"
RUN_DIR="${BERTH_RUN_DIR:-/run/berth}"
PREFIX="${BERTH_PREFIX:-/usr/local}"
CNI_BIN_DIR="${BERTH_CNI_BIN_DIR:-/opt/cni/bin}"
CNI_CONF_DIR="${BERTH_CNI_CONF_DIR:-/etc/cni/net.d}"
CNI_DATA_DIR="${BERTH_CNI_DATA_DIR:-/var/lib/cni/networks}"
POD_LOG_DIR="${BERTH_POD_LOG_DIR:-/var/log/pods}"
CTRD_SOCK="${BERTH_CONTAINERD_SOCKET:-/run/containerd/containerd.sock}"
CTRD_CONFIG="${BERTH_CONTAINERD_CONFIG:-/etc/berth/containerd.toml}"
CTRD_ROOT="${BERTH_CONTAINERD_ROOT:-/var/lib/containerd}"
CTRD_STATE="${BERTH_CONTAINERD_STATE:-/run/containerd}"
CTRD_LOG="${BERTH_CONTAINERD_LOG:-/var/log/berth-containerd.log}"
PROFILE="${BERTH_BUILD_PROFILE:-release}"
READY_TIMEOUT="${BERTH_READY_TIMEOUT:-180}"
PAUSE_IMAGE=berth.local/pause:3.10
BUSYBOX_IMAGE=berth.local/busybox:1.35
KUBECONFIG_PATH="$STATE_DIR/kubeconfigs/admin.conf"

# run a command in the node's network namespace (or here)
in_node() {
	if [[ -n "$NETNS" ]]; then
		nsenter --net="/var/run/netns/$NETNS" -- "$@"
	else
		"$@"
	fi
}
ctr_() { ctr -a "$CTRD_SOCK" -n k8s.io "$@"; }
containerd_answers() { [[ -S "$CTRD_SOCK" ]] && timeout 10 ctr -a "$CTRD_SOCK" version >/dev/null 2>&1; }
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
# The pid file names a live berth or containerd: a pid reused by something else (after a reboot or
# a crash) is never signalled nor taken for a running berth.
pid_ours() {
	local argv0=""
	pid_alive "$1" || return 1
	IFS= read -r -d '' argv0 <"/proc/$(cat "$1")/cmdline" 2>/dev/null
	[[ "$argv0" =~ (^|/)(berth|containerd)$ ]]
}

[[ $EUID -eq 0 ]] || berth_die "run as root (sudo $0)"
if [[ -n "$NETNS" && ! -e "/var/run/netns/$NETNS" ]]; then
	berth_die "BERTH_NETNS=$NETNS: /var/run/netns/$NETNS does not exist"
fi

# --- --stop ---------------------------------------------------------------------------------
if [[ "${1:-}" == "--stop" ]]; then
	if pid_ours "$RUN_DIR/berth.pid"; then
		berth_log "stopping berth up (pid $(cat "$RUN_DIR/berth.pid"))"
		berth_stop_pid "$(cat "$RUN_DIR/berth.pid")" 30
	fi
	rm -f "$RUN_DIR/berth.pid"
	if pid_ours "$RUN_DIR/containerd.pid"; then
		berth_log "stopping the containerd quickstart started (pid $(cat "$RUN_DIR/containerd.pid"))"
		berth_stop_pid "$(cat "$RUN_DIR/containerd.pid")" 20
	fi
	rm -f "$RUN_DIR/containerd.pid"
	exit 0
fi
[[ $# -eq 0 ]] || berth_die "usage: $0 [--stop]"

# --- 1. packages ------------------------------------------------------------------------------
if [[ -z "${BERTH_SKIP_PACKAGES:-}" ]]; then
	berth_ensure_packages "${BERTH_RUNTIME_PKGS[@]}" "${BERTH_BUILD_PKGS[@]}"
fi

command -v kubectl >/dev/null 2>&1 ||
	berth_die "kubectl not found on PATH: Berth is driven by the real kubectl (1.27-1.33); install it and rerun"

# --- 2. binaries ------------------------------------------------------------------------------
if [[ -n "${BERTH_SKIP_BUILD:-}" ]]; then
	BIN_DIR="${BERTH_BIN_DIR:?BERTH_SKIP_BUILD needs BERTH_BIN_DIR}"
else
	berth_ensure_cargo
	berth_log "building $PROFILE binaries ($(cargo --version))"
	if [[ "$PROFILE" == release ]]; then
		(cd "$repo" && cargo build --release --workspace --bins)
	else
		(cd "$repo" && cargo build --workspace --bins)
	fi
	BIN_DIR="$repo/target/$PROFILE"
fi
for b in berth berth-cni; do
	[[ -x "$BIN_DIR/$b" ]] || berth_die "$BIN_DIR/$b missing"
done
mkdir -p "$PREFIX/bin" "$CNI_BIN_DIR"
install -m 0755 "$BIN_DIR/berth" "$PREFIX/bin/berth.new" && mv -f "$PREFIX/bin/berth.new" "$PREFIX/bin/berth"
if [[ -x "$BIN_DIR/berth-control-plane" ]]; then
	install -m 0755 "$BIN_DIR/berth-control-plane" "$PREFIX/bin/berth-control-plane.new"
	mv -f "$PREFIX/bin/berth-control-plane.new" "$PREFIX/bin/berth-control-plane"
fi
install -m 0755 "$BIN_DIR/berth-cni" "$CNI_BIN_DIR/berth-cni.new" && mv -f "$CNI_BIN_DIR/berth-cni.new" "$CNI_BIN_DIR/berth-cni"
if [[ ! -e "$CNI_BIN_DIR/loopback" && ! -L "$CNI_BIN_DIR/loopback" ]]; then
	ln -s berth-cni "$CNI_BIN_DIR/loopback"
fi
berth_log "installed $PREFIX/bin/berth, $CNI_BIN_DIR/berth-cni"

# --- 3. containerd ----------------------------------------------------------------------------
SNAPSHOTTER=""
if containerd_answers; then
	berth_log "containerd already answers on $CTRD_SOCK: using it as it is"
	# what its CRI plugin expects (read from the config it most likely runs with)
	dump_args=()
	[[ -n "${BERTH_CONTAINERD_CONFIG:-}" ]] && dump_args=(--config "$CTRD_CONFIG")
	dump="$(containerd "${dump_args[@]}" config dump 2>/dev/null || true)"
	cri_get() { # SECTION KEY
		awk -v sec="$1" -v key="$2" '
			/^[ \t]*\[/ { s=$0; gsub(/^[ \t]+|[ \t]+$/, "", s); cur=s; next }
			cur==sec && $1==key { v=$0; sub(/^[^=]*=[ \t]*/, "", v); gsub(/"/, "", v); print v; exit }' <<<"$dump"
	}
	running_sandbox="$(cri_get '[plugins."io.containerd.grpc.v1.cri"]' sandbox_image)"
	running_bin_dir="$(cri_get '[plugins."io.containerd.grpc.v1.cri".cni]' bin_dir)"
	running_conf_dir="$(cri_get '[plugins."io.containerd.grpc.v1.cri".cni]' conf_dir)"
	SNAPSHOTTER="$(cri_get '[plugins."io.containerd.grpc.v1.cri".containerd]' snapshotter)"
	if [[ -n "$running_conf_dir" && "$running_conf_dir" != "$CNI_CONF_DIR" ]]; then
		berth_log "containerd reads CNI configs from $running_conf_dir: using that"
		CNI_CONF_DIR="$running_conf_dir"
	fi
	if [[ -n "$running_bin_dir" && "$running_bin_dir" != "$CNI_BIN_DIR" ]]; then
		berth_log "WARNING: containerd runs CNI plugins from $running_bin_dir, not $CNI_BIN_DIR;"
		berth_log "  set [plugins.\"io.containerd.grpc.v1.cri\".cni] bin_dir = \"$CNI_BIN_DIR\" and restart containerd"
	fi
else
	mkdir -p "$(dirname "$CTRD_CONFIG")" "$RUN_DIR" "$(dirname "$CTRD_LOG")" "$CTRD_ROOT" "$CNI_CONF_DIR"
	if berth_oom_score_adj_restricted; then restrict=true; else restrict=false; fi
	if berth_overlayfs_works "$CTRD_ROOT"; then SNAPSHOTTER=overlayfs; else SNAPSHOTTER=native; fi
	if [[ -f /etc/containerd/config.toml && "$CTRD_CONFIG" != /etc/containerd/config.toml ]]; then
		berth_log "note: containerd is started with $CTRD_CONFIG; /etc/containerd/config.toml is left as it is and not used"
	fi
	cat >"$CTRD_CONFIG.tmp" <<EOF
# Written by Berth's packaging/quickstart.sh: containerd's config for a Berth node.
# (/etc/containerd/config.toml is not touched; containerd is started with --config $CTRD_CONFIG)
version = 2
root = "$CTRD_ROOT"
state = "$CTRD_STATE"

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$CTRD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_ROOT/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # true when this host cannot lower oom_score_adj (no CAP_SYS_RESOURCE): detected
  restrict_oom_score_adj = $restrict
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$SNAPSHOTTER"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
EOF
	mv -f "$CTRD_CONFIG.tmp" "$CTRD_CONFIG"
	berth_log "starting containerd (config $CTRD_CONFIG, log $CTRD_LOG)"
	if [[ -n "$NETNS" ]]; then
		setsid nsenter --net="/var/run/netns/$NETNS" -- containerd --config "$CTRD_CONFIG" >>"$CTRD_LOG" 2>&1 </dev/null &
	else
		setsid containerd --config "$CTRD_CONFIG" >>"$CTRD_LOG" 2>&1 </dev/null &
	fi
	echo $! >"$RUN_DIR/containerd.pid"
	for ((i = 0; i < 300; i++)); do
		containerd_answers && break
		kill -0 "$(cat "$RUN_DIR/containerd.pid")" 2>/dev/null || {
			tail -n 30 "$CTRD_LOG" >&2
			berth_die "containerd exited; see $CTRD_LOG"
		}
		sleep 0.1
	done
	containerd_answers || berth_die "containerd does not answer on $CTRD_SOCK after 30 s; see $CTRD_LOG"
fi

# --- 4. images --------------------------------------------------------------------------------
images="$repo/target/berth-images"
berth_log "building images into $images"
bash "$repo/images/build.sh" "$images" >/dev/null
snap_args=()
[[ -n "$SNAPSHOTTER" ]] && snap_args=(--snapshotter "$SNAPSHOTTER")
for a in pause busybox; do
	ctr_ images import "${snap_args[@]}" "$images/$a.oci.tar" >/dev/null
done
if [[ -n "${running_sandbox:-}" && "$running_sandbox" != "$PAUSE_IMAGE" ]]; then
	berth_log "containerd's sandbox image is $running_sandbox: tagging $PAUSE_IMAGE as that name"
	ctr_ images tag --force "$PAUSE_IMAGE" "$running_sandbox" >/dev/null
fi
berth_log "imported $BUSYBOX_IMAGE and $PAUSE_IMAGE"

# --- 5. berth up ------------------------------------------------------------------------------
mkdir -p "$STATE_DIR" "$RUN_DIR" "$(dirname "$LOG")" "$CNI_CONF_DIR" "$CNI_DATA_DIR" "$POD_LOG_DIR"
up_args=(up --state-dir "$STATE_DIR" --containerd-socket "$CTRD_SOCK"
	--cni-conf-dir "$CNI_CONF_DIR" --cni-bin-dir "$CNI_BIN_DIR" --cni-data-dir "$CNI_DATA_DIR"
	--pod-log-dir "$POD_LOG_DIR")
[[ -n "${BERTH_LISTEN:-}" ]] && up_args+=(--listen "$BERTH_LISTEN")
[[ -n "${BERTH_NODE_IP:-}" ]] && up_args+=(--node-ip "$BERTH_NODE_IP")
[[ -n "${BERTH_NODE_NAME:-}" ]] && up_args+=(--node-name "$BERTH_NODE_NAME")
if pid_ours "$RUN_DIR/berth.pid"; then
	berth_log "berth up already running (pid $(cat "$RUN_DIR/berth.pid")); not starting another"
else
	berth_log "starting: $PREFIX/bin/berth ${up_args[*]} (log $LOG)"
	echo "===== quickstart: $(date -u +%FT%TZ) berth ${up_args[*]}" >>"$LOG"
	if [[ -n "$NETNS" ]]; then
		setsid nsenter --net="/var/run/netns/$NETNS" -- "$PREFIX/bin/berth" "${up_args[@]}" >>"$LOG" 2>&1 </dev/null &
	else
		setsid "$PREFIX/bin/berth" "${up_args[@]}" >>"$LOG" 2>&1 </dev/null &
	fi
	echo $! >"$RUN_DIR/berth.pid"
fi

kubectl_=(kubectl --kubeconfig "$KUBECONFIG_PATH")
ready=""
deadline=$((SECONDS + READY_TIMEOUT))
while ((SECONDS < deadline)); do
	if ! pid_alive "$RUN_DIR/berth.pid"; then
		tail -n 40 "$LOG" >&2
		berth_die "berth up exited; see $LOG"
	fi
	if [[ -f "$KUBECONFIG_PATH" ]]; then
		ready="$(in_node "${kubectl_[@]}" --request-timeout=5s get nodes \
			-o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null |
			awk -F= '$2=="True" {print $1; exit}' || true)"
		[[ -n "$ready" ]] && break
	fi
	sleep 1
done
if [[ -z "$ready" ]]; then
	tail -n 40 "$LOG" >&2
	berth_die "the node did not become Ready within ${READY_TIMEOUT}s; see $LOG"
fi

prefix=""
[[ -n "$NETNS" ]] && prefix="nsenter --net=/var/run/netns/$NETNS "
cat <<EOF

Berth is up: node $ready is Ready.
  admin kubeconfig: $KUBECONFIG_PATH
  logs:             $LOG$([[ -f "$RUN_DIR/containerd.pid" ]] && echo " (containerd: $CTRD_LOG)")
  stop:             ${BERTH_NETNS:+BERTH_NETNS=$NETNS }$0 --stop

First commands:
  ${prefix}kubectl --kubeconfig $KUBECONFIG_PATH get nodes
  ${prefix}kubectl --kubeconfig $KUBECONFIG_PATH run web --image=$BUSYBOX_IMAGE -- httpd -f -p 8080
  ${prefix}kubectl --kubeconfig $KUBECONFIG_PATH get pods -o wide
EOF
