# Sourced by the benchmarks/*_gpu.sh scripts: what one device call needs around its stages.
#   stage LIMIT NAME CMD...  runs CMD under `timeout LIMIT` into $OUT/NAME.log unless NAME is left out of $STAGES,
#                            and appends "NAME: rc=... N s" to $OUT/stages.txt;
#   pack_logs                moves $OUT's *.log / *.md files into one $OUT/logs.tgz: a call returns at most 8 files,
#                            and the JSON records must not be the ones left behind;
#   install_wheels           installs the carried .whl/*.whl (jsonargparse & co., missing from the GPU image) into
#                            /tmp/site and puts it on PYTHONPATH; exits the call if that fails;
#   record_gpu               writes the card's name, driver and memory to $OUT/gpu.txt.
# Needs OUT and STAGES set by the caller.
mkdir -p "$OUT"
# The GPU image may name its interpreter python3 only.
command -v python >/dev/null || { mkdir -p /tmp/bin && ln -sf "$(command -v python3)" /tmp/bin/python && export PATH=/tmp/bin:$PATH; }
stage() { local limit=$1 name=$2; shift 2; local t=$SECONDS
  case " $STAGES " in *" $name "*) ;; *) echo "$name: skipped (STAGES)" | tee -a "$OUT/stages.txt"; return;; esac
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "$name: rc=$? $((SECONDS - t)) s" | tee -a "$OUT/stages.txt"; }
pack_logs() { (cd "$OUT" || exit 0; shopt -s nullglob; local files=(./*.log ./*.md)
  [ ${#files[@]} -gt 0 ] && tar czf logs.tgz "${files[@]}" && rm -f "${files[@]}") || true; }
install_wheels() {
  python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || { echo "wheels failed"; tail -n 5 "$OUT/pip.log"; exit 1; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-$PWD}; }
record_gpu() { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1; }
