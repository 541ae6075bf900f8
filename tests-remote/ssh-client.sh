#!/usr/bin/env bash
# Opens ssh (or sftp) to a running throwaway server started by tests-remote/sshd-server.sh.
#
#   tests-remote/ssh-client.sh [--dir DIR] [--host N|ADDR] [--user USER] [--sftp] [-- ssh args / command]
#
#   --dir   the server's state dir (default: $THREADBARE_SSHD_STATE, else the only running server in /tmp)
#   --host  alias number (5 means 127.0.0.5) or address (default 127.0.0.1)
#   --user  login user (default: the server's test user; e.g. tbpass for the one whose sudo asks)
#   --sftp  start sftp instead of ssh
#
# The connection checks the host key against the server's known_hosts and ignores ~/.ssh/config.
set -euo pipefail

prog=${0##*/}
die() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }

dir=${THREADBARE_SSHD_STATE:-}
host=127.0.0.1
user=""
tool=ssh
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=${2:?--dir needs a value}; shift 2 ;;
    --host) host=${2:?--host needs a value}; shift 2 ;;
    --user) user=${2:?--user needs a value}; shift 2 ;;
    --sftp) tool=sftp; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) break ;;
  esac
done

if [ -z "$dir" ]; then
  # No dir given: use the server if exactly one is running.
  running=()
  for env in /tmp/threadbare-sshd.*/env; do
    [ -f "$env" ] || continue
    d=${env%/env}
    "$(dirname -- "$0")/sshd-server.sh" status "$d" 2>/dev/null && running+=("$d")
  done
  [ ${#running[@]} -eq 1 ] || die "found ${#running[@]} running servers; pass --dir or set THREADBARE_SSHD_STATE"
  dir=${running[0]}
fi
[ -f "$dir/env" ] || die "no server description at $dir/env"
# shellcheck source=/dev/null
. "$dir/env"

[[ $host =~ ^[0-9]+$ ]] && host=127.0.0.$host
user=${user:-$THREADBARE_SSHD_USER}

opts=(-F /dev/null -i "$THREADBARE_SSHD_KEY" -o IdentitiesOnly=yes
  -o "UserKnownHostsFile=$THREADBARE_SSHD_KNOWN_HOSTS" -o StrictHostKeyChecking=yes)
if [ "$tool" = sftp ]; then
  exec sftp "${opts[@]}" -P "$THREADBARE_SSHD_PORT" "$@" "$user@$host"
fi
exec ssh "${opts[@]}" -p "$THREADBARE_SSHD_PORT" "$user@$host" "$@"
