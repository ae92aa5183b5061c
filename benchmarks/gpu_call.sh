# Sourced by the benchmarks/*_gpu.sh scripts: what one device call needs around its stages.
#   stage LIMIT NAME CMD...  runs CMD under `timeout LIMIT` into $OUT/NAME.log unless NAME is left out of $STAGES,
#                            and appends "NAME: rc=... N s" to $OUT/stages.txt;
#   pack_logs                moves $OUT's *.log / *.md files into one $OUT/logs.tgz: a call returns at most 8 files,
#                            and the JSON records must not be the ones left behind.
# Needs OUT and STAGES set by the caller.
mkdir -p "$OUT"
# The GPU image may name its interpreter python3 only.
command -v python >/dev/null || { mkdir -p /tmp/bin && ln -sf "$(command -v python3)" /tmp/bin/python && export PATH=/tmp/bin:$PATH; }
stage() { local limit=$1 name=$2; shift 2; local t=$SECONDS
  case " $STAGES " in *" $name "*) ;; *) echo "$name: skipped (STAGES)" | tee -a "$OUT/stages.txt"; return;; esac
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; echo "$name: rc=$? $((SECONDS - t)) s" | tee -a "$OUT/stages.txt"; }
pack_logs() { (cd "$OUT" && ls ./*.log ./*.md >/dev/null 2>&1 && tar czf logs.tgz ./*.log ./*.md 2>/dev/null && rm -f ./*.log ./*.md) || true; }
