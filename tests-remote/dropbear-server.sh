#!/usr/bin/env bash
# A throwaway Dropbear server on loopback, beside the OpenSSH one of sshd-server.sh, so that the
# library is tested against a second SSH server (routers, rescue systems and small containers run
# Dropbear) and against a login shell that is not bash.
#
#   tests-remote/dropbear-server.sh start [client-key]   start in the background; prints the state dir
#   tests-remote/dropbear-server.sh stop [dir]           stop it, unauthorize its key, remove its dir
#   tests-remote/dropbear-server.sh drop [dir]           kill the open sessions only; keep listening
#   tests-remote/dropbear-server.sh status [dir]         exit 0 while the listener is alive
#
# [client-key] is a private key whose `.pub` is authorized (the OpenSSH server's key, so one key
# reaches both); without it a key is made in the state dir. [dir] defaults to $THREADBARE_DROPBEAR_STATE.
#
# Dropbear runs as root (it must, to log users in) on 127.0.0.1 only, in the foreground (-F -E, its
# log in <dir>/dropbear.log), with an ed25519 host key made for the run and no password logins.
# The login user is `tbsh`, whose login shell is /bin/sh (dash here), with passwordless sudo.
# Dropbear has no AuthorizedKeysFile setting: the key goes into ~tbsh/.ssh/authorized_keys, one line
# per running server tagged with its state dir, so servers of parallel runs do not disturb each other.
#
# The state dir holds <dir>/server.json (read by tests-remote/dropbear-server.ts) and <dir>/known_hosts.
set -euo pipefail

prog=${0##*/}
marker=.threadbare-dropbear
login_user=tbsh
users_state=/var/lib/threadbare-sshd
start_timeout_s=20

die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }

resolve_dir() {
  local dir=${1:-${THREADBARE_DROPBEAR_STATE:-}}
  [ -n "$dir" ] || die "which server? pass its state dir, or set THREADBARE_DROPBEAR_STATE"
  [ -f "$dir/$marker" ] || die "$dir is not a threadbare dropbear state dir"
  printf '%s\n' "$dir"
}

alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# The listener's pid, if it is still this server's dropbear.
listener_pid() {
  local dir=$1 pid
  [ -f "$dir/dropbear.pid" ] || return 0
  pid=$(<"$dir/dropbear.pid")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/host_key" || return 0
  printf '%s\n' "$pid"
}

# The listener's descendants: one dropbear per connection, and what each runs.
sessions() {
  ps -e -o pid= -o ppid= | awk -v root="$1" '
    { parent[$1] = $2 }
    END {
      keep[root] = 1
      do { grew = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 } } while (grew)
      for (p in keep) if (p != root) print p
    }'
}

pick_port() {
  local low=32768 p i
  if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then read -r low _ </proc/sys/net/ipv4/ip_local_port_range; fi
  for ((i = 0; i < 100; i++)); do
    p=$((10000 + ((RANDOM << 15) | RANDOM) % (low - 10000)))
    [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] || { printf '%s\n' "$p"; return 0; }
  done
  die "found no free port"
}

answers_ssh() {
  local line
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    IFS= read -r -t 5 line <&3 || exit 1
    [[ $line == SSH-2.0-* ]]
  ) 2>/dev/null
}

# Under the lock sshd-server.sh takes for its users: servers of parallel runs share them.
with_users_lock() {
  install -d -m 0700 "$users_state"
  (
    exec 9>"$users_state/users.lock"
    flock 9
    "$@"
  )
}

setup_user() {
  local home
  if ! getent passwd "$login_user" >/dev/null; then
    useradd --create-home --user-group --shell /bin/sh --comment "threadbare test user (sh)" "$login_user"
  fi
  [ "$(getent passwd "$login_user" | cut -d: -f7)" = /bin/sh ] || usermod --shell /bin/sh "$login_user" >/dev/null
  [ "$(getent shadow "$login_user" | cut -d: -f2)" = '*' ] || usermod --password '*' "$login_user" >/dev/null
  home=$(getent passwd "$login_user" | cut -d: -f6)
  install -d -m 0755 -o "$login_user" -g "$(id -gn "$login_user")" "$home"
  install -d -m 0700 -o "$login_user" -g "$(id -gn "$login_user")" "$home/.ssh"
  [ -f "$home/.ssh/authorized_keys" ] || install -m 0600 -o "$login_user" -g "$(id -gn "$login_user")" /dev/null "$home/.ssh/authorized_keys"
  local rule tmp
  rule="# Written by effect-threadbare tests-remote/dropbear-server.sh.
$login_user ALL=(ALL) NOPASSWD: ALL"
  if [ "$(cat /etc/sudoers.d/threadbare-tbsh 2>/dev/null)" != "$rule" ]; then
    tmp=$(mktemp /etc/sudoers.d/.tmp.XXXXXX)
    printf '%s\n' "$rule" >"$tmp"
    visudo -cqf "$tmp" >/dev/null || { rm -f "$tmp"; die "generated sudoers file is invalid"; }
    chmod 0440 "$tmp"
    mv -f "$tmp" /etc/sudoers.d/threadbare-tbsh
  fi
}

# Rewrites authorized_keys without this server's line, plus `$2` when given; `sed -i` would
# replace the file under a login reading it, a rename does it at once.
set_authorized() {
  local dir=$1 line=${2:-} home file tmp
  home=$(getent passwd "$login_user" | cut -d: -f6)
  file=$home/.ssh/authorized_keys
  tmp=$(mktemp "$home/.ssh/.authorized_keys.XXXXXX")
  grep -vF -- "threadbare-dropbear:$dir " "$file" >"$tmp" 2>/dev/null || true
  # Lines of servers whose state dir is gone (a run killed before its stop) are dropped too.
  awk '{ if (match($0, /threadbare-dropbear:[^ ]+ /)) { d = substr($0, RSTART + 20, RLENGTH - 21); if (system("test -d " d) != 0) next } print }' \
    "$tmp" >"$tmp.2" && mv -f "$tmp.2" "$tmp"
  [ -z "$line" ] || printf '%s\n' "$line" >>"$tmp"
  chown "$login_user:$(id -gn "$login_user")" "$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$file"
}

cmd_start() {
  local key=${1:-} dir port pid i tries=0
  exec 3>&1 1>&2
  [ "$(id -u)" -eq 0 ] || die "Dropbear must run as root to log users in"
  command -v dropbear >/dev/null 2>&1 || die "Dropbear is not installed: apt-get install dropbear-bin"
  dir=$(mktemp -d /tmp/threadbare-dropbear.XXXXXX)
  [[ $dir =~ ^[A-Za-z0-9._/+-]+$ ]] || die "unexpected state dir $dir"
  : >"$dir/$marker"
  chmod 0755 "$dir"
  start_dir=$dir
  trap 'cmd_stop "$start_dir" || true' EXIT

  if [ -z "$key" ]; then
    ssh-keygen -q -t ed25519 -N '' -C threadbare-dropbear-user -f "$dir/id_ed25519"
    key=$dir/id_ed25519
  fi
  [ -f "$key.pub" ] || die "no public key beside $key"
  dropbearkey -t ed25519 -f "$dir/host_key" >/dev/null 2>&1
  with_users_lock setup_user
  with_users_lock set_authorized "$dir" "$(cut -d' ' -f1,2 "$key.pub") threadbare-dropbear:$dir "

  while :; do
    port=$(pick_port)
    : >"$dir/dropbear.log"
    # -F: stays our child (no daemon to hunt down); -E: log to stderr, into the log file; -s: keys only;
    # -m: no motd; -w: no root logins; setsid so a Ctrl-C of a terminal does not reach it.
    setsid dropbear -F -E -s -m -w -r "$dir/host_key" -P "$dir/dropbear.pid" -p "127.0.0.1:$port" \
      </dev/null >>"$dir/dropbear.log" 2>&1 3>&- &
    pid=$!
    for ((i = 0; i < start_timeout_s * 10; i++)); do
      answers_ssh "$port" && break
      alive "$pid" || break
      sleep 0.1
    done
    if answers_ssh "$port"; then break; fi
    kill "$pid" 2>/dev/null || true
    tries=$((tries + 1))
    grep -q 'Address already in use' "$dir/dropbear.log" && [ "$tries" -lt 5 ] && continue
    cat "$dir/dropbear.log" >&2
    die "dropbear did not start"
  done
  printf '%s\n' "$pid" >"$dir/dropbear.pid"
  printf '[127.0.0.1]:%s %s\n' "$port" "$(dropbearkey -y -f "$dir/host_key" | grep -E '^ssh-ed25519 ' | cut -d' ' -f1,2)" \
    >"$dir/known_hosts"
  cat >"$dir/server.json" <<EOF
{
  "stateDir": "$dir",
  "host": "127.0.0.1",
  "port": $port,
  "user": "$login_user",
  "loginShell": "/bin/sh",
  "keyPath": "$key",
  "knownHostsPath": "$dir/known_hosts",
  "logPath": "$dir/dropbear.log",
  "pid": $pid
}
EOF
  trap - EXIT
  printf '%s\n' "$dir" >&3
}

cmd_stop() {
  local dir pid victims i
  dir=$(resolve_dir "${1:-}")
  pid=$(listener_pid "$dir")
  if [ -n "$pid" ]; then
    kill -STOP "$pid" 2>/dev/null || true
    mapfile -t victims < <(sessions "$pid")
    kill -TERM "$pid" "${victims[@]}" 2>/dev/null || true
    kill -CONT "$pid" "${victims[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" "${victims[@]}" 2>/dev/null || true
  fi
  if getent passwd "$login_user" >/dev/null; then with_users_lock set_authorized "$dir"; fi
  rm -rf -- "$dir"
}

cmd_drop() {
  local dir pid victims
  dir=$(resolve_dir "${1:-}")
  pid=$(listener_pid "$dir")
  [ -n "$pid" ] || return 0
  mapfile -t victims < <(sessions "$pid")
  [ ${#victims[@]} -eq 0 ] || kill -KILL "${victims[@]}" 2>/dev/null || true
}

cmd_status() {
  [ -n "$(listener_pid "$(resolve_dir "${1:-}")")" ]
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  drop) shift; cmd_drop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) die "usage: $prog start [client-key] | stop [dir] | drop [dir] | status [dir]" ;;
esac
