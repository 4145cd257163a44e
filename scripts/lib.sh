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
