#!/usr/bin/env bash
# A throwaway OpenSSH server on loopback for effect-threadbare's tests, benchmarks and examples.
#
#   tests-remote/sshd-server.sh                  foreground: start, print how to connect, stop on Ctrl-C
#   tests-remote/sshd-server.sh start            start in the background; prints the state dir on stdout
#   tests-remote/sshd-server.sh stop [dir]       stop that server (every process it started) and remove its dir
#   tests-remote/sshd-server.sh restart [dir]    kill its sshd processes (open connections drop) and start
#                                                them again on the same port with the same keys
#   tests-remote/sshd-server.sh drop [dir]       kill the open sessions only; keep listening
#   tests-remote/sshd-server.sh status [dir]     exit 0 when every listener of that server is alive
#
# [dir] defaults to $THREADBARE_SSHD_STATE (set by sourcing <dir>/env), then $THREADBARE_SSHD_DIR.
#
# Settings (environment):
#   THREADBARE_SSHD_DIR         state dir (default: a fresh `mktemp -d /tmp/threadbare-sshd.XXXXXX`)
#   THREADBARE_SSHD_PORT        port (default: a free port below the kernel's ephemeral range)
#   THREADBARE_SSHD_HOST_COUNT  number of loopback hosts 127.0.0.1 .. 127.0.0.N (default 16)
#
# "Hosts" are loopback addresses: Linux routes all of 127.0.0.0/8 to `lo`, so nothing is configured.
# One sshd listens on at most 16 addresses (MAX_LISTEN_SOCKS), so every 16 hosts get their own sshd
# process, all sharing one sshd_config; only ListenAddress and PidFile differ (given with -o).
#
# As root, logins are for dedicated users created here (idempotently):
#   tbtest   key login, passwordless sudo           (the user tests log in as)
#   tbpass   key login, sudo asks for its password  (password in <dir>/tbpass.password)
#   tbother  no login, no sudo                      (a target for `sudo -u`)
# Unprivileged, sshd can only log in the user running it, so that user is the only one.
#
# Certificates: the host key is also signed by a host CA (HostCertificate; the plain key is still
# offered, and <dir>/known_hosts still lists it), and sshd trusts a user CA (TrustedUserCAKeys):
#   <dir>/known_hosts_ca                   only `@cert-authority` lines for every host (no plain key)
#   <dir>/id_ed25519_cert_plus[-cert.pub]  the login key again, with a certificate beside it
#   <dir>/id_ed25519_cert_only[-cert.pub]  a key that is not in authorized_keys: it logs in only
#                                          with its certificate
#
# The state dir holds the keys, sshd_config, the log, pid files, and a description of the server:
# <dir>/env (shell KEY=value lines) and <dir>/server.json (read by tests-remote/server.ts).
set -euo pipefail

prog=${0##*/}
default_host_count=16
max_listen_per_sshd=16  # OpenSSH's MAX_LISTEN_SOCKS
start_timeout_s=20
marker=.threadbare-sshd  # marks a dir as ours, so `stop` never deletes anything else

die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$prog" "$*" >&2; }

find_sshd() {
  local p
  for p in "$(command -v sshd 2>/dev/null || true)" /usr/sbin/sshd /usr/local/sbin/sshd; do
    if [ -n "$p" ] && [ -x "$p" ]; then printf '%s\n' "$p"; return 0; fi
  done
  die "OpenSSH server (sshd) is not installed: apt-get install openssh-server"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Paths go unquoted into sshd_config, the env file and JSON: keep them to plain characters.
check_plain_path() {
  case $1 in
    /*) ;;
    *) die "state dir must be an absolute path: $1" ;;
  esac
  [[ $1 =~ ^[A-Za-z0-9._/+-]+$ ]] || die "state dir may only contain letters, digits and ._/+- : $1"
}

resolve_dir() {
  local dir=${1:-${THREADBARE_SSHD_STATE:-${THREADBARE_SSHD_DIR:-}}}
  [ -n "$dir" ] || die "which server? pass its state dir, or set THREADBARE_SSHD_STATE"
  [ -f "$dir/$marker" ] || die "$dir is not a threadbare sshd state dir"
  printf '%s\n' "$dir"
}

# ---------------------------------------------------------------------------------------------------
# Processes

# Listener pids of the server in $1 that are still alive. A pid file can outlive its process and the
# pid be reused, so a pid only counts while its command line still names this server's sshd_config.
listener_pids() {
  local dir=$1 f pid
  for f in "$dir"/sshd-*.pid; do
    [ -f "$f" ] || continue
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || continue
    alive "$pid" || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/sshd_config" || continue
    printf '%s\n' "$pid"
  done
}

# Running and not a zombie. A killed daemon is re-parented to PID 1, which may reap it late.
alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# The given pids and all their descendants.
process_tree() {
  [ $# -gt 0 ] || return 0
  ps -e -o pid= -o ppid= | awk -v roots="$*" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      do {
        grew = 0
        for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grew = 1 }
      } while (grew)
      for (p in keep) print p
    }'
}

# Ends the given pids: TERM, then KILL whatever is still there after a grace period.
end_processes() {
  [ $# -gt 0 ] || return 0
  local pid left i
  kill -TERM "$@" 2>/dev/null || true
  kill -CONT "$@" 2>/dev/null || true  # a stopped process only acts on TERM once continued
  for ((i = 0; i < 50; i++)); do
    left=()
    for pid in "$@"; do alive "$pid" && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "${left[@]}" 2>/dev/null || true
}

# Kills this server's processes: with "all", the listeners too; with "sessions", only what the
# listeners started (per-connection sshd processes and the commands they run).
kill_server() {
  local dir=$1 which=$2 listeners tree pid victims=()
  mapfile -t listeners < <(listener_pids "$dir")
  [ ${#listeners[@]} -gt 0 ] || return 0
  # Freeze the listeners first so no new session appears while the tree is collected; once a
  # listener is gone its children move to PID 1 and could no longer be told apart.
  kill -STOP "${listeners[@]}" 2>/dev/null || true
  mapfile -t tree < <(process_tree "${listeners[@]}")
  for pid in "${tree[@]}"; do
    if [ "$which" = all ] || ! printf '%s\n' "${listeners[@]}" | grep -qx -- "$pid"; then
      victims+=("$pid")
    fi
  done
  end_processes "${victims[@]}"
  if [ "$which" = all ]; then
    rm -f "$dir"/sshd-*.pid
  else
    kill -CONT "${listeners[@]}" 2>/dev/null || true
  fi
}

# ---------------------------------------------------------------------------------------------------
# Ports

port_in_use() {
  if command -v ss >/dev/null 2>&1; then
    # Any TCP socket on that local port (listening, connected or TIME_WAIT) rules it out.
    [ -n "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# A free port below the ephemeral range, so outgoing connections cannot have taken it already.
pick_port() {
  local low=32768 top p i
  if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then read -r low _ </proc/sys/net/ipv4/ip_local_port_range; fi
  top=$((low > 12000 ? low : 61000))
  for ((i = 0; i < 100; i++)); do
    p=$((10000 + ((RANDOM << 15) | RANDOM) % (top - 10000)))
    port_in_use "$p" || { printf '%s\n' "$p"; return 0; }
  done
  die "found no free port; set THREADBARE_SSHD_PORT"
}

# True once the address answers with an SSH banner: the kernel accepts TCP as soon as the socket
# listens, the banner proves sshd itself is serving it.
answers_ssh() {
  local addr=$1 port=$2 line
  (
    exec 3<>"/dev/tcp/$addr/$port" || exit 1
    IFS= read -r -t 5 line <&3 || exit 1
    [[ $line == SSH-2.0-* ]]
  ) 2>/dev/null
}

# ---------------------------------------------------------------------------------------------------
# Users (root only)

plain_profile() {
  local user=$1 home
  home=$(getent passwd "$user" | cut -d: -f6)
  install -d -m 0755 -o "$user" -g "$(id -gn "$user")" "$home"
  # OpenSSH's bash sources ~/.bashrc even for non-interactive commands: keep it free of slow work,
  # its time would be added to every command.
  printf '# threadbare test user: deliberately plain, no work per command.\n' >"$home/.bashrc"
  # shellcheck disable=SC2016  # $HOME is for the profile to expand
  printf '# threadbare test user: deliberately plain.\n[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n' >"$home/.profile"
  rm -f "$home/.bash_logout"
  chown "$user:" "$home/.bashrc" "$home/.profile"
}

# Changes only what differs: another server's tests may be logging in as these users right now
# (resetting tbpass's password to `*` for a moment made its sudo refuse the real one).
ensure_user() {
  local user=$1 keep_password=${2:-}
  if ! getent passwd "$user" >/dev/null; then
    useradd --create-home --user-group --shell /bin/bash --comment "threadbare test user" "$user"
  fi
  if [ "$(getent passwd "$user" | cut -d: -f7)" != /bin/bash ]; then
    usermod --shell /bin/bash "$user" >/dev/null  # it reports "no changes" on stdout
  fi
  # `*` means "no password" while the account stays usable for key logins; useradd leaves `!`,
  # a locked account, which sshd refuses even with a valid key.
  if [ -z "$keep_password" ] && [ "$(getent shadow "$user" | cut -d: -f2)" != '*' ]; then
    usermod --password '*' "$user" >/dev/null
  fi
  plain_profile "$user"
}

# Servers start while others run tests against the same users: a rule is replaced only when it
# changes, and then in one rename (sudo skips names holding a dot), never truncated in place,
# which for a moment would leave tbtest without NOPASSWD and make its sudo prompt.
install_sudoers() {
  local name=$1 content=$2 tmp
  tmp=$(mktemp /etc/sudoers.d/.tmp.XXXXXX)
  printf '%s\n' "$content" >"$tmp"
  if cmp -s "$tmp" "/etc/sudoers.d/$name"; then
    rm -f "$tmp"
    return
  fi
  visudo -cqf "$tmp" >/dev/null || { rm -f "$tmp"; die "generated sudoers file for $name is invalid"; }
  chown root:root "$tmp"
  chmod 0440 "$tmp"
  mv -f "$tmp" "/etc/sudoers.d/$name"
}

# The users are shared by every server on this machine, and several may start at once (tests,
# examples, benchmarks): one setup at a time, and tbpass keeps one password for all of them.
users_state=/var/lib/threadbare-sshd

setup_users() {
  local dir=$1 password
  if ! command -v sudo >/dev/null 2>&1 || ! command -v visudo >/dev/null 2>&1; then
    die "sudo is not installed (the test users need it): apt-get install sudo"
  fi
  install -d -m 0700 "$users_state"
  exec 9>"$users_state/users.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi

  ensure_user tbtest
  ensure_user tbpass keep-password
  ensure_user tbother

  if ! [ -s "$users_state/tbpass.password" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20 >"$users_state/tbpass.password")
    rm -f "$users_state/tbpass.set"
  fi
  password=$(<"$users_state/tbpass.password")
  # Set once per password (and again if the account was made anew): a change while other tests
  # log in as tbpass is what must not happen.
  if ! [ -e "$users_state/tbpass.set" ] || [ "$(getent shadow tbpass | cut -d: -f2)" = '*' ] ||
    [ "$(getent shadow tbpass | cut -d: -f2)" = '!' ]; then
    printf 'tbpass:%s\n' "$password" | chpasswd
    : >"$users_state/tbpass.set"
  fi
  (umask 077; printf '%s\n' "$password" >"$dir/tbpass.password")

  install_sudoers threadbare-tbtest "# Written by effect-threadbare tests-remote/sshd-server.sh.
tbtest ALL=(ALL) NOPASSWD: ALL"
  # Every sudo call asks for the password (no cached credentials) and never prints the first-use
  # lecture, so each test sees the same prompt whatever ran before it.
  install_sudoers threadbare-tbpass "# Written by effect-threadbare tests-remote/sshd-server.sh.
Defaults:tbpass timestamp_timeout=0, lecture=never
tbpass ALL=(ALL) ALL"
  exec 9>&-
}

# ---------------------------------------------------------------------------------------------------
# Start

write_config() {
  local dir=$1 port=$2 allow_users=$3 password_auth=$4 sshd=$5 cfg=$1/sshd_config
  cat >"$cfg" <<EOF
# Throwaway test server written by effect-threadbare tests-remote/sshd-server.sh.
# ListenAddress and PidFile are given per sshd process on the command line (-o).
Port $port
AddressFamily inet
HostKey $dir/ssh_host_ed25519_key
# Offered next to the plain key: a client that asks for ssh-ed25519 (ssh2, any client whose
# known_hosts lists the plain key) is served as before.
HostCertificate $dir/ssh_host_ed25519_key-cert.pub
TrustedUserCAKeys $dir/user_ca.pub
# Keys live in the state dir, not in anyone's ~/.ssh; StrictModes would refuse a file in /tmp.
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication $password_auth
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $allow_users
# Fan-out and load tests open many connections at once.
MaxStartups 1000:30:2000
# OpenSSH's default, kept on purpose: the library bounds channels per connection below it.
MaxSessions 10
Subsystem sftp internal-sftp
LogLevel VERBOSE
PrintMotd no
PrintLastLog no
UseDNS no
AllowTcpForwarding yes
X11Forwarding no
# No AcceptEnv: like many servers, env requests are dropped. No ClientAliveInterval either.
EOF
  # OpenSSH >= 9.8 blocks a source address for a while after failed logins or crashed sessions;
  # tests fail logins on purpose, all from 127.0.0.1. Older versions do not know the option.
  if "$sshd" -t -f "$cfg" -o PerSourcePenalties=no >/dev/null 2>&1; then
    printf 'PerSourcePenalties no\n' >>"$cfg"
  fi
  "$sshd" -t -f "$cfg" || die "sshd rejects the generated $cfg"
}

# Starts one sshd per group of 16 addresses and waits until every address serves SSH.
# Returns 2 when the port turned out to be taken (the caller may try another one).
launch() {
  local dir=$1 port=$2 count=$3 sshd=$4 i a group=0 args addr log_from failed deadline pending still
  log_from=$(($(stat -c %s "$dir/sshd.log" 2>/dev/null || echo 0) + 1))
  for ((i = 1; i <= count; i += max_listen_per_sshd)); do
    args=()
    for ((a = i; a < i + max_listen_per_sshd && a <= count; a++)); do
      args+=(-o "ListenAddress=127.0.0.$a:$port")
    done
    # Without -D sshd daemonises itself (new session: a Ctrl-C in this terminal does not reach it).
    "$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log" -o "PidFile=$dir/sshd-$group.pid" "${args[@]}" </dev/null 3>&- \
      || { kill_server "$dir" all; die "sshd failed to start"; }
    group=$((group + 1))
  done

  pending=()
  for ((a = 1; a <= count; a++)); do pending+=("127.0.0.$a"); done
  deadline=$((SECONDS + start_timeout_s))
  while :; do
    failed=$(tail -c "+$log_from" "$dir/sshd.log" 2>/dev/null | grep -E 'Bind to port .* failed|Cannot bind|fatal:' || true)
    if [ -n "$failed" ]; then
      kill_server "$dir" all
      if grep -q 'Address already in use' <<<"$failed"; then return 2; fi
      die "sshd failed: $failed"
    fi
    still=()
    for addr in "${pending[@]}"; do answers_ssh "$addr" "$port" || still+=("$addr"); done
    pending=("${still[@]}")
    [ ${#pending[@]} -eq 0 ] && break
    if ((SECONDS >= deadline)); then
      kill_server "$dir" all
      die "sshd did not answer on ${pending[*]} port $port within ${start_timeout_s}s; see $dir/sshd.log"
    fi
    sleep 0.1
  done
  [ "$(listener_pids "$dir" | wc -l)" -eq "$group" ] \
    || { kill_server "$dir" all; die "an sshd process exited during start; see $dir/sshd.log"; }
  # The probes above leave "Connection closed" lines; mark where the real traffic starts.
  printf -- '--- sshd-server.sh: all %s hosts answer on port %s ---\n' "$count" "$port" >>"$dir/sshd.log"
}

# A host CA signs the host key for every loopback host; a user CA signs two user keys for the login
# user (see the header). The certificates are valid from an hour ago, for ten years: a server's
# life is one test run, and a clock step must not make them not yet valid.
make_certificates() {
  local dir=$1 user=$2 count=$3 principals="" a key
  for ((a = 1; a <= count; a++)); do principals+="${principals:+,}127.0.0.$a"; done
  ssh-keygen -q -t ed25519 -N '' -C threadbare-test-host-ca -f "$dir/host_ca"
  ssh-keygen -q -t ed25519 -N '' -C threadbare-test-user-ca -f "$dir/user_ca"
  ssh-keygen -q -s "$dir/host_ca" -I threadbare-test-host -h -n "$principals" -V -1h:+520w \
    "$dir/ssh_host_ed25519_key.pub"
  install -m 0600 "$dir/id_ed25519" "$dir/id_ed25519_cert_plus"
  install -m 0644 "$dir/id_ed25519.pub" "$dir/id_ed25519_cert_plus.pub"
  ssh-keygen -q -t ed25519 -N '' -C threadbare-test-cert-only -f "$dir/id_ed25519_cert_only"
  for key in id_ed25519_cert_plus id_ed25519_cert_only; do
    ssh-keygen -q -s "$dir/user_ca" -I "threadbare-test-$key" -n "$user" -V -1h:+520w "$dir/$key.pub"
  done
}

json_string() { if [ -n "$1" ]; then printf '"%s"' "$1"; else printf 'null'; fi; }

# Writes <dir>/env and <dir>/server.json from <dir>/settings and the live pids.
describe() {
  local dir=$1 pids hosts_json="" hosts_sh="" a port host_count login_user password_user other_user is_root
  # shellcheck source=/dev/null
  . "$dir/settings"
  pids=$(listener_pids "$dir" | tr '\n' ' ' | sed 's/ $//')
  for ((a = 1; a <= host_count; a++)); do
    hosts_sh+="${hosts_sh:+ }127.0.0.$a"
    hosts_json+="${hosts_json:+, }\"127.0.0.$a\""
  done
  local password_file=""
  [ -n "$password_user" ] && password_file=$dir/tbpass.password

  cat >"$dir/env.tmp" <<EOF
THREADBARE_SSHD_STATE='$dir'
THREADBARE_SSHD_HOST='127.0.0.1'
THREADBARE_SSHD_HOSTS='$hosts_sh'
THREADBARE_SSHD_PORT='$port'
THREADBARE_SSHD_USER='$login_user'
THREADBARE_SSHD_KEY='$dir/id_ed25519'
THREADBARE_SSHD_KNOWN_HOSTS='$dir/known_hosts'
THREADBARE_SSHD_SSH_CONFIG='$dir/ssh_config'
THREADBARE_SSHD_PASSWORD_USER='$password_user'
THREADBARE_SSHD_PASSWORD_FILE='$password_file'
THREADBARE_SSHD_OTHER_USER='$other_user'
THREADBARE_SSHD_IS_ROOT='$is_root'
THREADBARE_SSHD_PIDS='$pids'
THREADBARE_SSHD_LOG='$dir/sshd.log'
EOF
  mv "$dir/env.tmp" "$dir/env"

  cat >"$dir/server.json.tmp" <<EOF
{
  "stateDir": "$dir",
  "host": "127.0.0.1",
  "hosts": [$hosts_json],
  "port": $port,
  "user": "$login_user",
  "keyPath": "$dir/id_ed25519",
  "knownHostsPath": "$dir/known_hosts",
  "sshConfigPath": "$dir/ssh_config",
  "passwordUser": $(json_string "$password_user"),
  "passwordFile": $(json_string "$password_file"),
  "otherUser": $(json_string "$other_user"),
  "isRoot": $([ "$is_root" = 1 ] && echo true || echo false),
  "pids": [${pids// /, }],
  "logPath": "$dir/sshd.log",
  "sshdConfigPath": "$dir/sshd_config",
  "certificates": {
    "knownHostsCaPath": "$dir/known_hosts_ca",
    "hostCaPublicKeyPath": "$dir/host_ca.pub",
    "userCaPublicKeyPath": "$dir/user_ca.pub",
    "plusKeyPath": "$dir/id_ed25519_cert_plus",
    "onlyKeyPath": "$dir/id_ed25519_cert_only"
  }
}
EOF
  mv "$dir/server.json.tmp" "$dir/server.json"
}

# ssh_config with one Host entry per alias: `ssh -F <dir>/ssh_config tb5` reaches 127.0.0.5.
write_ssh_config() {
  local dir=$1 port=$2 user=$3 count=$4 a
  {
    printf '# Written by effect-threadbare tests-remote/sshd-server.sh. Usage: ssh -F %s tb1\n' "$dir/ssh_config"
    for ((a = 1; a <= count; a++)); do
      printf 'Host tb%s\n  HostName 127.0.0.%s\n' "$a" "$a"
    done
    printf 'Host *\n  Port %s\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n' "$port" "$user" "$dir/id_ed25519"
    printf '  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n' "$dir/known_hosts"
  } >"$dir/ssh_config"
}

# A start that fails leaves nothing behind: no sshd, no state dir (its log is shown first).
start_failed() {
  local dir=$1
  kill_server "$dir" all
  if [ -s "$dir/sshd.log" ]; then
    note "end of $dir/sshd.log:"
    tail -n 20 "$dir/sshd.log" >&2
  fi
  rm -rf -- "$dir"
}

cmd_start() {
  local sshd dir port fixed_port=1 count login_user allow_users password_user="" other_user="" root=0 a hostkey
  # stdout carries only the state dir (for `dir=$(sshd-server.sh start)`); tools' chatter goes to stderr.
  exec 3>&1 1>&2
  sshd=$(find_sshd)
  command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen is not installed: apt-get install openssh-client"
  count=${THREADBARE_SSHD_HOST_COUNT:-$default_host_count}
  if ! [[ $count =~ ^[0-9]+$ ]] || ((count < 1 || count > 250)); then
    die "THREADBARE_SSHD_HOST_COUNT must be 1..250, not $count"
  fi
  port=${THREADBARE_SSHD_PORT:-}
  if [ -z "$port" ]; then fixed_port=0; port=$(pick_port); fi
  if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die "THREADBARE_SSHD_PORT must be a port number, not $port"
  fi

  if [ -n "${THREADBARE_SSHD_DIR:-}" ]; then
    dir=$THREADBARE_SSHD_DIR
    check_plain_path "$dir"
    if [ -f "$dir/$marker" ]; then
      [ -z "$(listener_pids "$dir")" ] || die "a server is already running in $dir; stop it first: $prog stop $dir"
      find "$dir" -mindepth 1 -delete  # a stale run: start over with fresh keys
    elif [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
      die "$dir exists and is not empty; refusing to use it"
    fi
    mkdir -p "$dir"
  else
    dir=$(mktemp -d /tmp/threadbare-sshd.XXXXXX)
    check_plain_path "$dir"
  fi
  : >"$dir/$marker"
  start_dir=$dir
  trap 'start_failed "$start_dir"' EXIT

  if is_root; then
    root=1
    login_user=tbtest
    password_user=tbpass
    other_user=tbother
    allow_users="tbtest tbpass"
    install -d -m 0755 /run/sshd  # privilege separation dir, required when sshd runs as root
    setup_users "$dir"
  else
    login_user=$(id -un)
    allow_users=$login_user
  fi
  # sshd reads authorized_keys as the user logging in: the dir must be traversable for them.
  chmod 0755 "$dir"

  ssh-keygen -q -t ed25519 -N '' -C threadbare-test-host -f "$dir/ssh_host_ed25519_key"
  ssh-keygen -q -t ed25519 -N '' -C threadbare-test-user -f "$dir/id_ed25519"
  install -m 0644 "$dir/id_ed25519.pub" "$dir/authorized_keys"
  make_certificates "$dir" "$login_user" "$count"
  : >"$dir/sshd.log"

  hostkey=$(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")
  write_state() {
    cat >"$dir/settings" <<EOF
port=$port
host_count=$count
login_user=$login_user
password_user=$password_user
other_user=$other_user
is_root=$root
EOF
    for ((a = 1; a <= count; a++)); do printf '[127.0.0.%s]:%s %s\n' "$a" "$port" "$hostkey"; done >"$dir/known_hosts"
    for ((a = 1; a <= count; a++)); do
      printf '@cert-authority [127.0.0.%s]:%s %s\n' "$a" "$port" "$(cut -d' ' -f1,2 "$dir/host_ca.pub")"
    done >"$dir/known_hosts_ca"
    write_ssh_config "$dir" "$port" "$login_user" "$count"
  }

  local tries=0 rc
  while :; do
    write_config "$dir" "$port" "$allow_users" "$([ "$root" = 1 ] && echo yes || echo no)" "$sshd"
    write_state
    rc=0
    launch "$dir" "$port" "$count" "$sshd" || rc=$?
    [ "$rc" -eq 0 ] && break
    tries=$((tries + 1))
    if [ "$rc" -ne 2 ] || [ "$fixed_port" = 1 ] || [ "$tries" -ge 5 ]; then
      die "port $port is already in use"
    fi
    port=$(pick_port)
  done
  describe "$dir"

  # Under sudo, hand the client-side files to the person who ran it.
  if [ "$root" = 1 ] && [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" != 0 ]; then
    chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$dir/id_ed25519" "$dir/tbpass.password" \
      "$dir/id_ed25519_cert_plus" "$dir/id_ed25519_cert_only" 2>/dev/null || true
  fi

  trap - EXIT
  note "$count host(s) 127.0.0.1..127.0.0.$count port $port, user $login_user; env file $dir/env"
  printf '%s\n' "$dir" >&3
  exec 1>&3 3>&-
}

cmd_stop() {
  local dir pids pid i left
  dir=$(resolve_dir "${1:-}")
  mapfile -t pids < <(listener_pids "$dir")
  kill_server "$dir" all
  [ -z "$(listener_pids "$dir")" ] || die "could not stop the sshd processes of $dir"
  rm -rf -- "$dir"
  # The killed listeners belong to PID 1 now; wait (briefly) until it has reaped them, so that right
  # after `stop` not even a zombie `[sshd] <defunct>` of ours is left in the process list.
  for ((i = 0; i < 50; i++)); do
    left=0
    for pid in "${pids[@]}"; do [ -e "/proc/$pid" ] && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
}

cmd_restart() {
  local dir sshd port host_count login_user password_user other_user is_root
  dir=$(resolve_dir "${1:-}")
  sshd=$(find_sshd)
  # shellcheck source=/dev/null
  . "$dir/settings"
  kill_server "$dir" all
  launch "$dir" "$port" "$host_count" "$sshd" || die "port $port is taken; could not restart"
  describe "$dir"
}

cmd_drop() {
  kill_server "$(resolve_dir "${1:-}")" sessions
}

cmd_status() {
  local dir expected port host_count login_user password_user other_user is_root
  dir=$(resolve_dir "${1:-}")
  # shellcheck source=/dev/null
  . "$dir/settings"
  expected=$(((host_count + max_listen_per_sshd - 1) / max_listen_per_sshd))
  [ "$(listener_pids "$dir" | wc -l)" -eq "$expected" ]
}

cmd_foreground() {
  local dir
  dir=$(cmd_start)
  # shellcheck source=/dev/null
  . "$dir/env"
  foreground_dir=$dir
  trap 'trap - INT TERM EXIT; echo >&2; note stopping; cmd_stop "$foreground_dir"; exit 0' INT TERM
  trap 'cmd_stop "$foreground_dir"' EXIT
  cat <<EOF

Throwaway sshd running: hosts $THREADBARE_SSHD_HOSTS
  port $THREADBARE_SSHD_PORT, user $THREADBARE_SSHD_USER, state dir $dir

Connect with:
  ssh -i $THREADBARE_SSHD_KEY -p $THREADBARE_SSHD_PORT -o IdentitiesOnly=yes -o UserKnownHostsFile=$THREADBARE_SSHD_KNOWN_HOSTS -o StrictHostKeyChecking=yes $THREADBARE_SSHD_USER@127.0.0.1
or:
  ssh -F $THREADBARE_SSHD_SSH_CONFIG tb1
  tests-remote/ssh-client.sh --dir $dir
EOF
  if [ -n "$THREADBARE_SSHD_PASSWORD_USER" ]; then
    printf '  sudo password of %s: %s\n' "$THREADBARE_SSHD_PASSWORD_USER" "$(<"$THREADBARE_SSHD_PASSWORD_FILE")"
  fi
  printf '\nFor tests in another shell: export THREADBARE_SSHD_STATE=%s\nLog: %s\nCtrl-C stops it.\n' "$dir" "$THREADBARE_SSHD_LOG"
  # sleep in the background so the trap runs as soon as a signal arrives
  while cmd_status "$dir"; do sleep 1 & wait $! || true; done
  note "an sshd process exited (stopping the rest); end of its log:"
  tail -n 20 "$THREADBARE_SSHD_LOG" >&2
  exit 1
}

case ${1:-} in
  "") cmd_foreground ;;
  start) cmd_start ;;
  stop) cmd_stop "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  drop) cmd_drop "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (start | stop [dir] | restart [dir] | drop [dir] | status [dir])" ;;
esac
