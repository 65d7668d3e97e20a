#!/usr/bin/env bash
# A throwaway single-node Ceph cluster (one mon, one OSD, no mgr) for tests
# and development, entirely inside one temporary directory, listening on
# 127.0.0.1 only. Nothing under /etc/ceph or /var/lib/ceph is used.
#
#   eval "$(scripts/ceph-dev-cluster.sh start)"   # prints export lines
#   scripts/ceph-dev-cluster.sh stop "$CEPH_SINGLE_DIR"
#
# `start` prints `export CEPH_SINGLE_DIR=... CEPH_CONF=... CEPH_POOL=...
# CEPH_MON_HOST=... CEPH_USER=admin` on stdout (everything else goes to
# stderr). The pool is usable by librados and rbd (`rbd pool init`).
#
# Knobs (environment):
#   CEPH_OBJECTSTORE  memstore (default: ~1.5 s to start, RAM-backed, data
#                     lost if the OSD restarts) or bluestore (a sparse file:
#                     for tests writing gigabytes, restarting the OSD, or
#                     benchmarks; ~5 s)
#   CEPH_MEMSTORE_BYTES  memstore size (default 4G; the OSD uses ~2x in RAM)
#   CEPH_BLUESTORE_BYTES bluestore file size (default 10G, sparse)
#   CEPH_POOL         pool name (default ci)
#   CEPH_PG_NUM       placement groups, a power of two (default 16)
#   CEPH_PORT         first of 41 ports (default: a random free block)
#   CEPH_EXTRA_CONF   extra lines for [global]
#   CEPH_DIR          directory to use (default: mktemp -d)
#
# On failure `start` kills what it started, prints the log tails and exits
# non-zero, keeping the directory for inspection. `stop` kills only the
# daemons recorded in DIR/pids whose command line names DIR/ceph.conf, then
# removes DIR; running it twice is harmless.
set -euo pipefail

# These override ceph.conf in every daemon (the admin keyring would be used
# by the OSD, for instance): the cluster must use only its own file.
unset CEPH_KEYRING CEPH_ARGS CEPH_LIB

log() { echo "ceph-dev-cluster: $*" >&2; }

size_bytes() {
    local v=$1
    case "$v" in
        *[Gg]) echo $((${v%[Gg]} << 30)) ;;
        *[Mm]) echo $((${v%[Mm]} << 20)) ;;
        *) echo "$v" ;;
    esac
}

port_free() {
    # True if nothing listens on 127.0.0.1:$1.
    ! (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null
}

pick_ports() {
    local tries p ok i
    for tries in $(seq 1 50); do
        p=$((20000 + (RANDOM % 400) * 100))
        ok=1
        for i in 0 1 2 3 10 20 30 40; do
            if ! port_free $((p + i)); then ok=0; break; fi
        done
        if [ $ok = 1 ]; then echo $p; return 0; fi
    done
    log "no free block of ports found"
    return 1
}

kill_recorded() {
    local dir=$1 pid
    [ -f "$dir/pids" ] || return 0
    while read -r pid; do
        [ -n "$pid" ] || continue
        if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir/ceph.conf"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    done <"$dir/pids"
    # Wait until they are gone or zombies (PID 1 reaps them).
    local n
    for n in $(seq 1 100); do
        local alive=0
        while read -r pid; do
            [ -n "$pid" ] || continue
            if [ -r "/proc/$pid/stat" ] && ! awk '{exit ($3 == "Z") ? 0 : 1}' "/proc/$pid/stat" 2>/dev/null; then
                alive=1
            fi
        done <"$dir/pids"
        [ $alive = 0 ] && break
        sleep 0.02
    done
}

fail() {
    local dir=$1; shift
    log "FAILED: $*"
    local f
    for f in "$dir"/log/*.log "$dir"/*.out; do
        [ -s "$f" ] || continue
        echo "---- last lines of $f" >&2
        tail -n 20 "$f" >&2
    done
    kill_recorded "$dir"
    log "logs kept in $dir"
    exit 1
}

record_pid() {
    # Daemons fork: their pid is in their pid file once they run.
    local dir=$1 pidfile=$2 n
    for n in $(seq 1 200); do
        if [ -s "$pidfile" ]; then
            cat "$pidfile" >>"$dir/pids"
            return 0
        fi
        sleep 0.025
    done
    fail "$dir" "no pid file $pidfile"
}

alive() {
    local pidfile=$1
    [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

ceph_cli() {
    # mgr-only commands hang forever without a mgr: always bound the CLI.
    timeout 20 ceph -c "$DIR/ceph.conf" "$@"
}

start() {
    local store=${CEPH_OBJECTSTORE:-memstore}
    local pool=${CEPH_POOL:-ci}
    local pg=${CEPH_PG_NUM:-16}
    case "$store" in memstore | bluestore) ;; *) log "CEPH_OBJECTSTORE must be memstore or bluestore"; exit 2 ;; esac
    for tool in ceph ceph-mon ceph-osd monmaptool rados uuidgen; do
        command -v "$tool" >/dev/null || { log "$tool not found: apt-get install -y --no-install-recommends ceph-mon ceph-osd ceph-common"; exit 2; }
    done
    DIR=${CEPH_DIR:-$(mktemp -d /tmp/ceph-dev.XXXXXX)}
    mkdir -p "$DIR"/{mon/a,osd/0,run,log,crash}
    : >"$DIR/pids"
    local port=${CEPH_PORT:-$(pick_ports)}
    local fsid
    fsid=$(uuidgen)
    local mon_host="[v2:127.0.0.1:$port,v1:127.0.0.1:$((port + 1))]"
    local store_conf
    if [ "$store" = memstore ]; then
        store_conf="osd_objectstore = memstore
memstore_device_bytes = $(size_bytes "${CEPH_MEMSTORE_BYTES:-4G}")"
    else
        # bluestore_block_path must stay unset (a symlink to itself otherwise).
        store_conf="osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $(size_bytes "${CEPH_BLUESTORE_BYTES:-10G}")
bluestore_fsck_on_mkfs = false
bluestore_fsck_on_mount = false
osd_memory_target = 1073741824"
    fi
    cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = $mon_host
public_addr = 127.0.0.1
public_network = 127.0.0.0/8
ms_bind_ipv4 = true
ms_bind_ipv6 = false
ms_bind_port_min = $((port + 2))
ms_bind_port_max = $((port + 40))
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
auth_allow_insecure_global_id_reclaim = false
keyring = $DIR/keyring
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
crash_dir = $DIR/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = $pg
osd_pool_default_pgp_num = $pg
osd_pool_default_pg_autoscale_mode = off
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
osd_crush_chooseleaf_type = 0
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mon_mgr_mkfs_grace = 315360000
${CEPH_EXTRA_CONF:-}
[mon]
mon_data = $DIR/mon/\$id
mon_cluster_log_file = $DIR/log/cluster.log
paxos_propose_interval = 0.05
[osd]
osd_data = $DIR/osd/\$id
keyring = $DIR/osd/\$id/keyring
osd_crush_initial_weight = 1
osd_crush_update_on_start = true
$store_conf
[client]
admin_socket =
EOF
    monmaptool --create --fsid "$fsid" --addv a "$mon_host" "$DIR/monmap" >"$DIR/monmaptool.out" 2>&1 ||
        fail "$DIR" "monmaptool"
    ceph-mon -c "$DIR/ceph.conf" --mkfs -i a --monmap "$DIR/monmap" </dev/null >"$DIR/mon-mkfs.out" 2>&1 ||
        fail "$DIR" "ceph-mon --mkfs"
    ceph-mon -c "$DIR/ceph.conf" -i a </dev/null >"$DIR/mon.out" 2>&1 || fail "$DIR" "ceph-mon"
    record_pid "$DIR" "$DIR/run/mon.a.pid"

    local uuid
    uuid=$(uuidgen)
    ceph_cli osd new "$uuid" >"$DIR/osd-new.out" 2>&1 || fail "$DIR" "ceph osd new"
    ceph-osd -c "$DIR/ceph.conf" -i 0 --mkfs --osd-uuid "$uuid" </dev/null >"$DIR/osd-mkfs.out" 2>&1 ||
        fail "$DIR" "ceph-osd --mkfs"
    ceph-osd -c "$DIR/ceph.conf" -i 0 </dev/null >"$DIR/osd.out" 2>&1 || fail "$DIR" "ceph-osd"
    record_pid "$DIR" "$DIR/run/osd.0.pid"

    local n
    for n in $(seq 1 600); do
        alive "$DIR/run/mon.a.pid" || fail "$DIR" "ceph-mon died"
        alive "$DIR/run/osd.0.pid" || fail "$DIR" "ceph-osd died"
        if ceph_cli osd dump 2>/dev/null | grep -q '^osd\.0 up *in'; then break; fi
        [ "$n" = 600 ] && fail "$DIR" "osd.0 not up and in after 60 s"
        sleep 0.1
    done
    ceph_cli osd pool create "$pool" "$pg" "$pg" replicated >"$DIR/pool.out" 2>&1 || fail "$DIR" "pool create"
    # rbd pool init enables the rbd application; librados needs nothing.
    if command -v rbd >/dev/null; then
        timeout 20 rbd -c "$DIR/ceph.conf" pool init "$pool" >>"$DIR/pool.out" 2>&1 || fail "$DIR" "rbd pool init"
    else
        ceph_cli osd pool application enable "$pool" rados >>"$DIR/pool.out" 2>&1 || fail "$DIR" "application enable"
    fi
    for n in $(seq 1 600); do
        alive "$DIR/run/osd.0.pid" || fail "$DIR" "ceph-osd died"
        if echo probe | timeout 10 rados -c "$DIR/ceph.conf" -p "$pool" put probe - 2>/dev/null; then
            timeout 10 rados -c "$DIR/ceph.conf" -p "$pool" rm probe 2>/dev/null || true
            break
        fi
        [ "$n" = 600 ] && fail "$DIR" "pool $pool not writable after 60 s"
        sleep 0.1
    done
    log "cluster up in $DIR ($store, pool $pool, mon $mon_host)"
    echo "export CEPH_SINGLE_DIR=$DIR CEPH_CONF=$DIR/ceph.conf CEPH_POOL=$pool CEPH_MON_HOST='$mon_host' CEPH_USER=admin"
}

stop() {
    local dir=${1:-${CEPH_SINGLE_DIR:-}}
    if [ -z "$dir" ]; then
        log "usage: $0 stop DIR (or CEPH_SINGLE_DIR set)"
        exit 2
    fi
    [ -d "$dir" ] || return 0
    # Refuse anything that is not one of ours.
    [ -f "$dir/ceph.conf" ] && [ -f "$dir/pids" ] || { log "$dir is not a cluster of this script"; exit 2; }
    kill_recorded "$dir"
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *)
        echo "usage: $0 start | stop DIR" >&2
        exit 2
        ;;
esac
