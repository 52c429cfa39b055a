#!/usr/bin/env bash
# kvpress's own environment for scripts/peers/kvpress_eval.py. kvpress 0.5.5 requires
# transformers >= 4.56, < 5.3 and comprexit pins transformers >= 5.23, so kvpress never shares
# comprexit's environment. Every package is pinned in kvpress-requirements.txt beside this file.
#
#   setup_kvpress_venv.sh venv [DIR]       this machine (CPU, Python 3.11, PyPI reachable): a venv at DIR
#                                          (default /work/venvs/kvpress) with torch 2.13.0 (pip takes the CPU
#                                          build on disk) and the pinned packages.
#   setup_kvpress_venv.sh wheels           this machine, for the GPU machine (Python 3.12, no network): the pinned
#                                          packages as cp312 manylinux wheels, torch excluded (the GPU machine's
#                                          torch 2.11 is used), in the git-ignored .whl/kvpress/build/wheels, packed into
#                                          pieces .whl/kvpress/p1..pN of PIECE_MB (default 30) MB, one per device
#                                          call (a call carries 64 MiB with the tree). Prints N.
#   setup_kvpress_venv.sh install STAGE [SITE]
#                                          the GPU machine, offline: unpacks STAGE/piece.* (the pieces, copied
#                                          there) and installs the wheels into the folder SITE (default
#                                          /root/kvsite), the way that machine already takes comprexit's wheels
#                                          (pip --target, no venv module needed); run the script with
#                                          PYTHONPATH=SITE, never with comprexit's /root/site on it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
requirements=$here/kvpress-requirements.txt
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2; exit 2; }

case "${1:-}" in
venv)
    dir=${2:-/work/venvs/kvpress}
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q torch==2.13.0
    "$dir/bin/python" -m pip install -q -r "$requirements"
    "$dir/bin/python" -c "import kvpress, torch, transformers; print('kvpress ready: torch', torch.__version__, \
'transformers', transformers.__version__)"
    echo "run: $dir/bin/python $here/kvpress_eval.py --help"
    ;;
wheels)
    root=$(cd "$here/../.." && pwd)
    out=$root/.whl/kvpress
    rm -rf "$out" && mkdir -p "$out/build/wheels"
    # fire is published as an sdist only: build its (pure Python) wheel here
    grep -v -E '^(#|fire==)' "$requirements" > "$out/build/binary.txt"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$out/build/wheels" -r "$out/build/binary.txt"
    python3 -m pip wheel -q --no-deps -w "$out/build/wheels" "$(grep -E '^fire==' "$requirements")"
    rm "$out/build/binary.txt"
    tar -C "$out/build" -cf - wheels | split -b "${PIECE_MB:-30}M" -d -a 2 - "$out/piece."
    n=0
    for piece in "$out"/piece.*; do n=$((n + 1)); mkdir -p "$out/p$n"; mv "$piece" "$out/p$n/"; done
    echo "$(ls "$out/build/wheels" | wc -l) wheels, $(du -sh "$out/build/wheels" | cut -f1); pieces: $n (.whl/kvpress/p1 .. p$n)"
    ;;
install)
    stage=${2:?install needs the folder holding the pieces (piece.*)}
    site=${3:-/root/kvsite}
    if [ ! -d "$site/kvpress" ]; then
        rm -rf "$stage/wheels"
        cat "$stage"/piece.* | tar -xf - -C "$stage"
        env -u PYTHONPATH python3 -m pip install -q --no-index --no-deps --target "$site" "$stage"/wheels/*.whl
    fi
    env -u PYTHONPATH PYTHONPATH="$site" python3 -c "import kvpress, torch, transformers; print('kvpress ready: \
torch', torch.__version__, 'transformers', transformers.__version__, 'from', transformers.__file__)"
    ;;
*)
    usage
    ;;
esac
