# Helpers shared by scripts/*. Source it; it does nothing on its own.

# find_python prints the first interpreter that is Python >= 3.11: $PYTHON if set, else
# python3, python3.11, python3.12, python3.13 from PATH. Fails if there is none.
find_python() {
  local candidate
  for candidate in ${PYTHON:-python3 python3.11 python3.12 python3.13}; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "error: need Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

# run_logged LOG CMD... runs CMD with its output in LOG; prints LOG only if CMD fails.
run_logged() {
  local log=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    echo "error: '$*' failed:" >&2
    cat "$log" >&2
    return 1
  fi
}

# debian_install PACKAGE MISSING ELSEWHERE: install Debian's PACKAGE with apt-get, for a tool the
# checks cannot run without. MISSING says what is missing ("promtool not found"); with no
# apt-get, or not as root, it is printed with what to do instead (ELSEWHERE when there is no
# apt-get at all) and this fails, so a missing tool never passes quietly. The package's own
# services are not started (policy-rc.d): the tests start what they need on ports of their own.
debian_install() {
  local package=$1 missing=$2 elsewhere=$3
  if ! command -v apt-get >/dev/null; then
    echo "error: $missing, and no apt-get to install it with: $elsewhere" >&2
    return 1
  fi
  if ((EUID != 0)); then
    echo "error: $missing; install it with" \
      "'sudo apt-get install --no-install-recommends $package', then run make again" >&2
    return 1
  fi
  echo "bootstrap: installing Debian's $package package (a minute or two)..." >&2
  local log policy=/usr/sbin/policy-rc.d had_policy=false status=0
  log=$(mktemp)
  [[ -e $policy ]] && had_policy=true
  $had_policy || { printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"; }
  # A clean machine may have no package lists yet.
  run_logged "$log" apt-get update &&
    run_logged "$log" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "$package" || status=$?
  $had_policy || rm -f "$policy"
  rm -f "$log"
  return "$status"
}
