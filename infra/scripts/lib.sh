# shellcheck shell=bash
# What the scripts in infra/scripts/ share. Each sources it after `cd`-ing to the repository's
# root (every path here is relative to it), under `set -euo pipefail`:
#   . infra/scripts/lib.sh

# apt_install PACKAGE... installs Debian packages: directly as root, else through passwordless
# sudo; exits with what to install by hand when neither is available. No packages: nothing to do.
apt_install() {
  [ "$#" != 0 ] || return 0
  echo "installing with apt: $*"
  local -a as_root
  if [ "$(id -u)" = 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "error: $* missing and neither root nor passwordless sudo is available to" >&2
    echo "       run 'apt-get install -y $*'; install them and run this again" >&2
    exit 1
  fi
  # Through env, so that sudo (which resets the environment) passes it on too.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "$@"
}

# ensure_venv NAME PINS_FILE TOOL... makes target/venv-NAME hold exactly the set pinned in
# PINS_FILE (infra/scripts/pins/), and (re)creates it when one of the TOOLs is missing from its
# bin/ or when PINS_FILE differs from the copy the venv was made from: a pin moved by a commit
# takes effect on the next run, without a `cargo clean`. Progress goes to stderr, so that a
# caller's stdout stays its own (infra/scripts/moto start prints only the URL).
ensure_venv() {
  local name=$1 pins=$2 tool
  shift 2
  local venv=target/venv-$name
  [ -f "$pins" ] || { echo "error: $pins does not exist" >&2; exit 1; }
  local current=true
  cmp -s "$pins" "$venv/pins.txt" || current=false
  for tool in "$@"; do
    [ -x "$venv/bin/$tool" ] || current=false
  done
  $current && return 0
  echo "installing $pins into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # --no-deps: the pins file is the whole resolved set, so pip installs exactly it and picks no
  # version of its own; `pip check` then refuses a set that lacks or contradicts a requirement,
  # which without --no-deps pip would have filled in silently with whatever is newest.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$pins" >&2
  "$venv/bin/pip" check >&2
  # Last: an install cut off halfway leaves no copy, so the next run starts it again.
  cp "$pins" "$venv/pins.txt"
}

# free_port prints a TCP port free on 127.0.0.1: bind to port 0 and read back what the kernel chose.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# answers URL succeeds when a GET of URL answers 2xx within 2 s.
answers() {
  curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
}

# start_ackflow_serve BINARY DATA_DIR STDOUT_LOG STDERR_LOG [SERVE_OPTION...] starts
# `BINARY serve --listen 127.0.0.1:0 --data-dir DATA_DIR SERVE_OPTION...` in the background and
# waits (30 s at most) for its first line, `ackflow listening on URL`: port 0 lets the kernel
# pick a free port, and that line is the only way to learn which. Sets serve_pid and serve_url.
# When the server exits or stays silent, stops it and returns 1 (the caller shows its logs).
# STDOUT_LOG and STDERR_LOG may be one file. Call it in the script's shell, not in $(...), so that
# serve_pid reaches the caller's trap; the caller's environment (ACKFLOW_LOG=... before the call)
# reaches the server.
# shellcheck disable=SC2034 # serve_url is the caller's
start_ackflow_serve() {
  local binary=$1 data_dir=$2 stdout_log=$3 stderr_log=$4 line
  shift 4
  mkdir -p "$data_dir"
  if [ "$stdout_log" = "$stderr_log" ]; then
    # One descriptor for both: two would each write from offset 0 over the other's lines.
    "$binary" serve --listen 127.0.0.1:0 --data-dir "$data_dir" "$@" >"$stdout_log" 2>&1 &
  else
    "$binary" serve --listen 127.0.0.1:0 --data-dir "$data_dir" "$@" >"$stdout_log" 2>"$stderr_log" &
  fi
  serve_pid=$!
  serve_url=""
  for _ in $(seq 1 300); do
    line=$(grep -s -m1 '^ackflow listening on ' "$stdout_log" || true)
    if [ -n "$line" ]; then
      serve_url=${line#ackflow listening on }
      return 0
    fi
    if ! kill -0 "$serve_pid" 2>/dev/null; then
      wait "$serve_pid" 2>/dev/null || true
      echo "error: ackflow serve exited" >&2
      return 1
    fi
    sleep 0.1
  done
  kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  echo "error: ackflow serve did not say where it listens within 30 s" >&2
  return 1
}
