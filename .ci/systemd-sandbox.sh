#!/usr/bin/env bash
# A real `systemd --user` manager for tests and CI, on a machine whose PID 1
# is not systemd (see shared/SYSTEMD-SANDBOX.md).
#
#   .ci/systemd-sandbox.sh packages   print the apt packages it needs (one line)
#   .ci/systemd-sandbox.sh start      start it (idempotent); prints the env file path
#   .ci/systemd-sandbox.sh stop       stop what `start` started, by recorded pid
#   .ci/systemd-sandbox.sh status     exit 0 when it is up and running
#
# It runs as root. The manager runs as an unprivileged test user inside a
# cgroup v2 subtree that the user owns, so it never touches the processes of
# the rest of the machine. Everything it starts is recorded in $STATE_DIR:
#
#   sandbox.env    XDG_RUNTIME_DIR, DBUS_SESSION_BUS_ADDRESS, RELAY_CI_USER,
#                  RELAY_CI_UID, RELAY_CI_HOME, RELAY_CI_LOG (shell syntax)
#   manager.pid    systemd --user
#   dbus.pid       the session bus daemon (the manager's own dbus.service)
#   cgroup         the cgroup subtree it made
#
# Settings (environment): RELAY_CI_USER (default relayci),
# RELAY_CI_STATE_DIR (default /run/relay-orchestrator-ci),
# RELAY_CI_START_TIMEOUT (seconds, default 20).
set -euo pipefail

SELF=$(readlink -f "$0")
CI_USER="${RELAY_CI_USER:-relayci}"
STATE_DIR="${RELAY_CI_STATE_DIR:-/run/relay-orchestrator-ci}"
START_TIMEOUT="${RELAY_CI_START_TIMEOUT:-20}"
CGROUP_NAME="relay-orchestrator-ci"
ENV_FILE="$STATE_DIR/sandbox.env"
LOG_FILE="$STATE_DIR/manager.log"
PACKAGES="systemd dbus dbus-user-session util-linux passwd procps python3-venv python3-dev libgirepository1.0-dev libcairo2-dev pkg-config tmux git"

die() { echo "systemd-sandbox: $*" >&2; exit 1; }
say() { echo "systemd-sandbox: $*" >&2; }

systemd_binary() {
    local candidate
    for candidate in /lib/systemd/systemd /usr/lib/systemd/systemd; do
        [[ -x $candidate ]] && { echo "$candidate"; return 0; }
    done
    return 1
}

# Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup on a pure v2
# machine, /sys/fs/cgroup/unified on a hybrid one.
cgroup2_root() {
    local mnt
    mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
    [[ -n $mnt ]] || return 1
    echo "$mnt"
}

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# A recorded pid is ours only if it is still the same program run by the test
# user: after a reboot or a killed session the number may belong to another.
declare -A COMM=([manager]=systemd [dbus]=dbus-daemon)
ours() {
    local name=$1 pid
    pid=$(read_pid "$name")
    pid_alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${COMM[$name]}" ]] || return 1
    [[ $(stat -c %u "/proc/$pid" 2>/dev/null) == "$(id -u "$CI_USER" 2>/dev/null)" ]]
}

read_pid() { [[ -f $STATE_DIR/$1.pid ]] && cat "$STATE_DIR/$1.pid" || true; }

# The command prefix that runs argv as the test user with the sandbox's
# environment (no PAM, no login session).
user_prefix() {
    local uid gid home
    uid=$(id -u "$CI_USER"); gid=$(id -g "$CI_USER")
    home=$(getent passwd "$CI_USER" | cut -d: -f6)
    USER_PREFIX=(setpriv --reuid="$uid" --regid="$gid" --init-groups
        env -i HOME="$home" USER="$CI_USER" LOGNAME="$CI_USER" SHELL=/bin/sh
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
        XDG_RUNTIME_DIR="/run/user/$uid"
        DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus")
}

as_user() { user_prefix; "${USER_PREFIX[@]}" "$@"; }

is_running() {
    ours manager && ours dbus || return 1
    local state
    state=$(as_user systemctl --user is-system-running 2>/dev/null || true)
    [[ $state == running ]]
}

# Start argv detached (own session), as the test user, inside cgroup $1; the
# process's pid (stable across the exec chain) goes to $STATE_DIR/$2.pid.
spawn_in_cgroup() {
    local cgroup=$1 name=$2; shift 2
    # The inner shell moves itself into the cgroup and records its pid, then
    # execs (same pid) into setpriv and the program.
    setsid sh -c 'echo $$ > "$1" && echo $$ > "$2/cgroup.procs" && shift 2 && exec "$@"' \
        sh "$STATE_DIR/$name.pid" "$cgroup" "$@" \
        </dev/null >>"$LOG_FILE" 2>&1 &
    local waited=0
    while [[ ! -s $STATE_DIR/$name.pid ]]; do
        (( waited++ < 50 )) || die "$name did not start (see $LOG_FILE)"
        sleep 0.1
    done
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    local systemd_bin
    systemd_bin=$(systemd_binary) || die "no systemd binary (install the systemd package)"
    command -v dbus-daemon >/dev/null || die "no dbus-daemon (install the dbus package)"
    [[ -e /usr/lib/systemd/user/dbus.socket || -e /lib/systemd/user/dbus.socket ]] \
        || die "no user dbus.socket (install the dbus-user-session package)"
    mkdir -p "$STATE_DIR"
    chmod 755 "$STATE_DIR"
    if is_running; then
        echo "$ENV_FILE"
        return 0
    fi
    # A half-started or dead sandbox: clear it first.
    if [[ -f $STATE_DIR/manager.pid || -f $STATE_DIR/dbus.pid ]]; then
        cmd_stop
    fi

    mkdir -p /run/systemd/system  # `systemd --user` refuses to start without it
    if ! id "$CI_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$CI_USER"
    fi
    local uid gid home
    uid=$(id -u "$CI_USER"); gid=$(id -g "$CI_USER")
    home=$(getent passwd "$CI_USER" | cut -d: -f6)

    mkdir -p "/run/user/$uid"
    chown "$uid:$gid" "/run/user/$uid"
    chmod 700 "/run/user/$uid"

    # No journald here: send the units' output to the manager's, and that to
    # the log file.
    install -d -o "$uid" -g "$gid" "$home/.config" "$home/.config/systemd" \
        "$home/.config/systemd/user"
    cat >"$home/.config/systemd/user.conf" <<'EOF'
[Manager]
DefaultStandardOutput=inherit
DefaultStandardError=inherit
EOF
    chown "$uid:$gid" "$home/.config/systemd/user.conf"

    local root cgroup
    root=$(cgroup2_root) || die "no cgroup v2 hierarchy mounted"
    cgroup="$root/$CGROUP_NAME"
    mkdir -p "$cgroup"
    chown -R "$uid:$gid" "$cgroup"
    echo "$cgroup" >"$STATE_DIR/cgroup"

    : >"$LOG_FILE"
    chmod 644 "$LOG_FILE"
    spawn_in_cgroup "$cgroup" manager "$SELF" as_user_exec "$systemd_bin" --user

    local deadline=$(( SECONDS + START_TIMEOUT )) state=""
    while (( SECONDS < deadline )); do
        ours manager || break
        state=$(as_user systemctl --user is-system-running 2>/dev/null || true)
        [[ $state == running ]] && break
        sleep 0.2
    done
    if [[ $state != running ]]; then
        say "manager not running (state: ${state:-none}); last log lines:"
        tail -n 20 "$LOG_FILE" >&2 || true
        cmd_stop
        exit 1
    fi
    # The session bus: the manager's own dbus.socket/dbus.service (package
    # dbus-user-session). The manager joins the bus only when that unit runs
    # (a dbus-daemon started beside it would lose its socket path to
    # dbus.socket and never see the manager), so start it and wait until
    # the manager answers on it.
    as_user systemctl --user start dbus.service \
        || { tail -n 20 "$LOG_FILE" >&2; cmd_stop; die "could not start the session bus"; }
    state=""
    while (( SECONDS < deadline )); do
        if as_user busctl --user call org.freedesktop.systemd1 /org/freedesktop/systemd1 \
            org.freedesktop.DBus.Peer Ping >/dev/null 2>&1; then
            state=bus
            break
        fi
        sleep 0.1
    done
    [[ $state == bus ]] || { cmd_stop; die "the manager did not join the session bus"; }
    as_user systemctl --user show -p MainPID --value dbus.service >"$STATE_DIR/dbus.pid"

    cat >"$ENV_FILE.tmp" <<EOF
RELAY_CI_USER=$CI_USER
RELAY_CI_UID=$uid
RELAY_CI_HOME=$home
RELAY_CI_LOG=$LOG_FILE
XDG_RUNTIME_DIR=/run/user/$uid
DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$uid/bus
EOF
    chmod 644 "$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
    say "running: manager pid $(read_pid manager), dbus pid $(read_pid dbus), cgroup $cgroup"
    echo "$ENV_FILE"
}

# Send SIGTERM to a recorded pid and wait (bounded) for it to go; SIGKILL after.
stop_pid() {
    local name=$1 pid
    pid=$(read_pid "$name")
    if ours "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
        local waited=0
        while pid_alive "$pid" && (( waited++ < 50 )); do sleep 0.1; done
        if ours "$name"; then
            say "$name (pid $pid) ignored SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$STATE_DIR/$name.pid"
}

cmd_stop() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    rm -f "$ENV_FILE"
    stop_pid manager  # stopping the manager stops its units, the bus included
    stop_pid dbus
    if [[ -f $STATE_DIR/cgroup ]]; then
        local cgroup
        cgroup=$(cat "$STATE_DIR/cgroup")
        if [[ -d $cgroup ]]; then
            # Units the manager left behind (its own stop ends them): wait a
            # little for the subtree to empty, then remove it bottom-up.
            local waited=0
            while [[ -n $(find "$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null) ]] \
                && (( waited++ < 50 )); do
                sleep 0.1
            done
            find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d $cgroup ]] && say "could not remove $cgroup (processes still in it?)"
        fi
        [[ -d $cgroup ]] || rm -f "$STATE_DIR/cgroup"
    fi
    return 0
}

cmd_status() {
    if is_running; then
        echo "running: manager pid $(read_pid manager), dbus pid $(read_pid dbus), env $ENV_FILE"
        return 0
    fi
    echo "not running"
    return 1
}

case "${1:-}" in
    packages) echo "$PACKAGES" ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    as_user_exec) shift; user_prefix; exec "${USER_PREFIX[@]}" "$@" ;;  # internal
    *) echo "usage: $0 packages|start|stop|status" >&2; exit 2 ;;
esac
