# Sourced by tools/node, tools/test and tools/demo: enters "a Node from npm" (tools/lib/node-npm.mjs)
# in the calling shell. The system Node only runs node-npm.mjs; everything after runs on this Node.
#
#   node_env_enter MAJOR [--addons]
#     fetches (or reuses) Node MAJOR in .cache/node/ and sets, in this shell:
#       PATH                Node's bin first (npm and npx are the system's, started by this Node;
#                           children the scripts and tests spawn run it too)
#       npm_config_nodedir  its headers: node-gyp (npm ci, build:native, prebuilds) builds against them
#     with --addons (a second leg: packages/*/build/ stays the first leg's build) also
#       EPHEMERA_NODE_ADDONS and NODE_OPTIONS=--require=tools/lib/node-addons.cjs, which make every
#       process load the addons built against this Node's headers in .cache/node/addons/.
#     Sets NODE_ENV_BIN and NODE_ENV_VERSION. Returns non-zero (with the reason on stderr) on failure.
node_env_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

node_env_prepare() {
  local cache
  cache="$(dirname "$(dirname "$node_env_lib")")/.cache/node"
  mkdir -p "$cache"
  # One preparer at a time (a second `npm test` in this checkout waits, then finds the cache).
  # 9>&-: nothing started here keeps holding the lock.
  (
    exec 9>>"$cache/lock"
    flock -w "${EPHEMERA_NODE_LOCK_TIMEOUT:-1800}" 9 || { echo "tools/node: timed out waiting for $cache/lock" >&2; exit 1; }
    # env -u NODE_OPTIONS: a leg's addon hook has nothing to do with fetching or building.
    env -u NODE_OPTIONS node "$node_env_lib/node-npm.mjs" prepare "$@" 9>&-
  )
}

node_env_enter() {
  local info addons
  info=$(node_env_prepare "$@") || return 1
  NODE_ENV_BIN=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).bin)' "$info")
  NODE_ENV_VERSION=$(node -e 'process.stdout.write(JSON.parse(process.argv[1]).version)' "$info")
  export PATH="$NODE_ENV_BIN:$PATH"
  export npm_config_nodedir=${NODE_ENV_BIN%/bin}
  if [[ " $* " == *" --addons "* ]]; then
    addons=$(node -e 'process.stdout.write(JSON.stringify(JSON.parse(process.argv[1]).addons))' "$info")
    export EPHEMERA_NODE_ADDONS=$addons
    export NODE_OPTIONS="--require=\"$node_env_lib/node-addons.cjs\"${NODE_OPTIONS:+ $NODE_OPTIONS}"
  fi
  local actual
  actual=$(node --version)
  [[ $actual == "v$NODE_ENV_VERSION" ]] || { echo "tools/node: node on PATH is $actual, not v$NODE_ENV_VERSION" >&2; return 1; }
}
