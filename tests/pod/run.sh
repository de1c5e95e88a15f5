#!/usr/bin/env bash
# The pods of docs/kubernetes.md in a real container engine: podman kube
# play, runc, images built here FROM scratch, no network, no pulls. Every
# setting and file lives in one temporary directory (CONTAINERS_CONF,
# CONTAINERS_STORAGE_CONF, runc's state), in a private mount namespace
# whose /run, /dev/shm, /var/tmp and /var/lib/containers are tmpfs: the
# machine's configuration and state are left alone. Every pod, container
# and image is removed at the end. Needs root, podman, runc, catatonit,
# busybox-static, dumb-init, jq and gzip (.ci/run installs them).
#
#   tests/pod/run.sh [SCENARIO...]     default: all of them, in this order
#
#   page      the page's pod, played as it is: jobs run; the page's shell
#             commands (kubectl exec -> podman exec); probes as the engine
#             runs them, during a STOP too; the STOP marker across a
#             container restart, a TERM not; the init step re-run while the
#             binary is busy; pod stop: exit 0, drained, nothing SIGKILLed
#   drain     a Diego-cell-like pod: garden (no drain) gets SIGTERM only
#             after rep's drain is done (--drain-name, SPEC section 8)
#   errand    the page's errand pod ends with the errand's status (--errand)
#   dumb-init container-run under dumb-init: one SIGTERM per stop
#   logs      a job writes its log file; the pod's logs container
#             (container-run logs) shows every line in podman logs, once,
#             in order, through rotations, and the rotated files and the
#             live one hold every byte (SPEC section 11)
#
# Where podman cannot run a container at all, it says why and skips (exit
# 0); with CI=true it fails. Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
page=docs/kubernetes.md
all_scenarios=(page drain errand dumb-init logs)
scenarios=("${@:-${all_scenarios[@]}}")
started=$SECONDS

cannot_run() {
  echo "tests/pod: podman cannot run a container here: $*" >&2
  if [ "${CI:-}" = true ]; then
    echo "0 passed, 1 failed"
    exit 1
  fi
  echo "tests/pod: skipped (outside CI)" >&2
  exit 0
}

for tool in podman runc catatonit busybox dumb-init jq gzip; do
  command -v "$tool" >/dev/null || cannot_run "$tool is not installed"
done
[ "$(id -u)" = 0 ] || cannot_run "needs root"
for s in "${scenarios[@]}"; do
  case " ${all_scenarios[*]} " in *" $s "*) ;; *) echo "unknown scenario: $s" >&2; exit 2 ;; esac
done

# A private mount namespace: whatever its configuration says, podman keeps
# its locks in /dev/shm (shared by every root podman of the machine), state
# under /run, an image cache under /var/lib/containers and temporary files
# in /var/tmp; there each is a tmpfs that ends with the suite.
if [ -z "${CRT_POD_INNER:-}" ]; then
  made=
  [ -e /var/lib/containers ] || { mkdir /var/lib/containers && made=1; }
  CRT_POD_INNER=1 unshare --mount --propagation private -- "$repo/tests/pod/run.sh" "$@"
  rc=$?
  [ -z "$made" ] || rmdir /var/lib/containers
  exit $rc
fi
for mnt in /run:0755 /dev/shm:1777 /var/lib/containers:0700 /var/tmp:1777; do
  mount -t tmpfs -o "size=64m,mode=${mnt#*:}" tmpfs "${mnt%:*}" ||
    cannot_run "cannot mount a tmpfs on ${mnt%:*} in a private mount namespace"
done

# --- one directory for everything podman and runc write -------------------
T=$(mktemp -d /tmp/crt-pod.XXXXXX)
mkdir -p "$T/bin" "$T/tmp"
export TMPDIR=$T/tmp
cat >"$T/bin/runc" <<EOF
#!/bin/sh
exec $(command -v runc) --root $T/runc "\$@"
EOF
# Limits below this machine's hard limits (raising one is refused); cgroupfs
# and runc (crun refuses a hybrid cgroup layout); storage and runtime state
# in $T. static_dir and volume_path stay at their defaults under graphroot:
# conmon's cleanup command is told --root, not this file's paths.
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] && nproc=1048576
nofile=$((nofile < 1024 ? nofile : 1024))
nproc=$((nproc < 4096 ? nproc : 4096))
cat >"$T/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
netns = "none"
log_driver = "k8s-file"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$T/events.log"
tmp_dir = "$T/tmp"
image_copy_tmp_dir = "$T/tmp"
infra_image = "localhost/crt-pod/pause:1"
[engine.runtimes]
runc = ["$T/bin/runc"]
[network]
network_config_dir = "$T/networks"
EOF
cat >"$T/storage.conf" <<EOF
[storage]
driver = "vfs"
runroot = "$T/runroot"
graphroot = "$T/graph"
EOF
chmod 755 "$T/bin/runc"
export CONTAINERS_CONF=$T/containers.conf CONTAINERS_STORAGE_CONF=$T/storage.conf
export PATH=$T/bin:$PATH

cleanup() {
  local pods
  pods=$(podman pod ps -q 2>/dev/null)
  [ -n "$pods" ] && podman pod rm -f -t 0 $pods >/dev/null 2>&1
  podman rm -a -f -t 0 >/dev/null 2>&1
  podman volume prune -f >/dev/null 2>&1
  podman rmi -a -f >/dev/null 2>&1
  rm -rf "$T"
}
trap cleanup EXIT

# --- images ---------------------------------------------------------------
# The binaries of this checkout (cargo rebuilds only what changed).
scripts/build-static >"$T/build-static.log" 2>&1 || {
  tail -20 "$T/build-static.log" >&2
  echo "tests/pod: scripts/build-static failed"
  echo "0 passed, 1 failed"
  exit 1
}
build() { # TAG CONTEXT [FILE]
  podman build -q --network none -t "localhost/crt-pod/$1:1" ${3:+-f "$3"} "$2" >"$T/build-$1.log" 2>&1 ||
    cannot_run "podman build $1: $(tail -3 "$T/build-$1.log")"
}
mkdir -p "$T/ctx/pause" "$T/ctx/scratch-job" "$T/ctx/jobs/root/bin" \
  "$T/ctx/jobs/root/opt/container-run" "$T/ctx/jobs/root/opt/testchild"
cp "$(command -v catatonit)" "$T/ctx/pause/catatonit"
printf 'FROM scratch\nCOPY catatonit /catatonit\nENTRYPOINT ["/catatonit", "-P"]\n' >"$T/ctx/pause/Containerfile"
cp tests/pod/images/scratch-job/Containerfile target/static/testchild "$T/ctx/scratch-job/"
cp -r tests/pod/images/jobs/. "$T/ctx/jobs/"
cp "$(command -v busybox)" "$T/ctx/jobs/root/bin/busybox"
cp target/static/container-run "$T/ctx/jobs/root/opt/container-run/"
cp target/static/testchild "$T/ctx/jobs/root/opt/testchild/"
# dumb-init as Debian builds it, with the libc it needs.
for f in "$(command -v dumb-init)" $(ldd "$(command -v dumb-init)" | grep -o '/[^ ]*'); do
  cp -L --parents "$f" "$T/ctx/jobs/root/"
done
build pause "$T/ctx/pause"
build scratch-job "$T/ctx/scratch-job"
build jobs "$T/ctx/jobs"
build container-run "$repo" "$repo/Containerfile"
# The riskiest part first: one container from scratch.
podman run --rm --network none localhost/crt-pod/jobs:1 /bin/true >"$T/smoke.log" 2>&1 ||
  cannot_run "$(tail -3 "$T/smoke.log")"

# --- helpers --------------------------------------------------------------
CR=/var/vcap/data/container-run/container-run # the page's installed binary
BAKED=/opt/container-run/container-run        # in the jobs image

fail() {
  echo "  FAIL: $*" >&2
  exit 1
}
note() { echo "  $*"; }

# wait_until WHAT SECONDS COMMAND...: poll every 0.1 s, fail at the deadline.
wait_until() {
  local what=$1 end=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || fail "timed out waiting for: $what"
    sleep 0.1
  done
}

# expect CODE COMMAND...: run it, fail unless it exits CODE.
expect() {
  local want=$1 code=0
  shift
  "$@" >"$T/out" 2>&1 || code=$?
  [ "$code" = "$want" ] || fail "exit $code, not $want: $*: $(head -c 600 "$T/out")"
}

# The YAML blocks of the page that hold a Pod named NAME, with the images
# replaced by the ones built here.
page_pod() {
  awk -v name="$1" '
    /^```yaml/ { y = 1; buf = ""; next }
    /^```/ && y { y = 0; if (buf ~ /kind: Pod/ && buf ~ ("\n  name: " name "\n")) printf "%s", buf; next }
    y { buf = buf $0 "\n" }' "$page" |
    sed -e 's|registry.example/container-run:1.0|localhost/crt-pod/container-run:1|' \
      -e 's|registry.example/route-registrar-job:1.0|localhost/crt-pod/scratch-job:1|' \
      -e 's|registry.example/[a-z-]*-job:1.0|localhost/crt-pod/jobs:1|'
}

# play FILE: the engine's `kube play`, without a network. Init containers
# run at every start of the pod (podman 4.3 mishandles run-once ones: its
# cleanup and kube play both remove it), so the init step must bear re-runs.
play() {
  podman kube play --network none \
    --annotation io.podman.annotations.init.container.type=always "$1" >"$T/play.log" 2>&1 ||
    fail "kube play: $(grep -v systemd "$T/play.log" | tail -5)"
}

# A probe's exec command from the YAML (a JSON list, maybe over two lines).
probe_command() { # FILE PROBE
  awk -v p="$2:" '$1 == p { f = 1 } f && /command:/ { c = 1 } c { print } c && /\]/ { exit }' "$1" |
    sed 's/^.*command://' | tr -d '\n' | jq -r '.[]'
}

state_of() { # CONTAINER CR JOB -> state and hold, as JSON
  podman exec "$1" "$2" ctl status "$3" --json | jq -c '{state, hold}'
}
is_state() { # CONTAINER CR JOB STATE HOLD
  [ "$(state_of "$1" "$2" "$3")" = "{\"state\":\"$4\",\"hold\":$5}" ]
}
mountpoint_of() { # CONTAINER DESTINATION
  podman inspect "$1" --format "{{range .Mounts}}{{if eq .Destination \"$2\"}}{{.Source}}{{end}}{{end}}"
}
exit_code() { podman inspect "$1" --format '{{.State.ExitCode}}'; }
count() { grep -c -x "$1" "$2" 2>/dev/null || true; }

# kubectl, as the page uses it, on podman: `exec POD -c CONTAINER -- CMD`
# runs CMD in the container kube play named POD-CONTAINER; `get pods -l
# SELECTOR -o name` lists the pods with that label.
cat >"$T/bin/kubectl" <<'EOF'
#!/bin/sh
case "$1" in
  get)
    [ "$2" = pods ] && [ "$3" = -l ] && [ "$5 $6" = "-o name" ] || exit 2
    exec podman pod ps --filter "label=$4" --format 'pod/{{.Name}}' ;;
  exec)
    pod=${2#pod/}
    [ "$3" = -c ] && [ "$5" = -- ] || exit 2
    ctr=$4
    shift 5
    exec podman exec "$pod-$ctr" "$@" ;;
  *) exit 2 ;;
esac
EOF
chmod 755 "$T/bin/kubectl"

# --- page: the page's pod, its commands, probes, restarts, pod stop -------
scenario_page() {
  local pod=nats-0 yaml=$T/page-pod.yaml
  local nats=nats-0-nats-nats rr=nats-0-route-registrar init=nats-0-container-run
  page_pod nats-0 >"$yaml"
  [ -s "$yaml" ] || fail "no pod nats-0 in $page"
  play "$yaml"
  wait_until "nats running" 30 is_state $nats $CR nats running false
  wait_until "route_registrar running" 30 is_state $rr $CR route_registrar running false
  [ "$(exit_code $init)" = 0 ] || fail "init container exited $(exit_code $init)"
  note "played the page's pod: both jobs run"
  # The no-libc claim: route-registrar's image holds one static file, and
  # container-run runs there from the volume.
  expect 127 podman exec $rr /bin/sh -c true

  local data
  data=$(mountpoint_of $nats /var/vcap/data)
  [ -d "$data" ] || fail "no data volume"
  local -a ready live
  mapfile -t ready < <(probe_command "$yaml" readinessProbe)
  mapfile -t live < <(probe_command "$yaml" livenessProbe)
  [ ${#ready[@]} -ge 2 ] && [ ${#live[@]} -ge 2 ] || fail "probes not found in the YAML"

  # probes_say READY LIVE: the readiness probe run as the kubelet runs it
  # (an exec, no shell) exits READY; the liveness probe so, and as podman's
  # healthcheck, exits LIVE.
  probes_say() {
    expect "$1" podman exec $nats "${ready[@]}"
    expect "$2" podman exec $nats "${live[@]}"
    local code=0
    podman healthcheck run $nats >"$T/out" 2>&1 || code=$?
    [ $code = "$2" ] || fail "podman healthcheck run: exit $code, not $2: $(podman inspect $nats \
      --format '{{json .State.Healthcheck.Log}}' 2>&1 | tail -c 800)"
  }
  probes_say 0 0

  # Every shell command of the page: kubectl lines here, the others in a
  # shell in the nats container. After some, what they claim is checked
  # from the other container.
  local n=0 no line want
  while IFS=$'\t' read -r -u 3 no line; do
    want=0
    [[ $line == *"# exits "* ]] && want=${line##*# exits }
    if [[ $line == *kubectl* ]]; then
      expect "$want" bash -c "$line"
    else
      expect "$want" podman exec $nats /bin/sh -c "$line"
    fi
    n=$((n + 1))
    case $line in
      *"ctl stop nats")
        is_state $rr $CR nats stopped true || fail "$page:$no: nats not held stopped"
        probes_say 1 0 ;;
      *"ctl start nats")
        is_state $rr $CR nats running false || fail "$page:$no: nats not running"
        probes_say 0 0 ;;
      *"ctl stop --all")
        is_state $rr $CR route_registrar stopped true || fail "$page:$no: route_registrar runs"
        is_state $rr $CR nats stopped true || fail "$page:$no: nats runs" ;;
      *"ctl start --all")
        is_state $rr $CR route_registrar running false || fail "$page:$no: route_registrar stopped"
        is_state $nats $CR nats running false || fail "$page:$no: nats stopped" ;;
      rm\ *)
        # container-run writes the marker again, so the hold outlives both
        # the rm and a container restart (SPEC section 2).
        wait_until "the marker written again" 10 test -e "$data/nats/nats_containerrun.stopped"
        is_state $nats $CR nats stopped true || fail "$page:$no: the rm lifted the hold"
        expect 0 podman restart $nats
        wait_until "nats held after the rm and a restart" 30 \
          is_state $nats $CR nats stopped true ;;
    esac
  done 3< <(awk '/^```/ { sh = ($0 == "```sh"); next } sh && NF && $1 !~ /^#/ { print NR "\t" $0 }' "$page")
  [ $n -ge 15 ] || fail "only $n shell commands found in $page"
  note "ran the page's $n shell commands, probes as podman and the kubelet run them"
  # From the container without a shell, the job in the other container.
  expect 0 podman exec $rr $CR ctl stop nats
  is_state $nats $CR nats stopped true || fail "nats after a stop from route-registrar"
  expect 0 podman exec $rr $CR ctl start nats
  is_state $nats $CR nats running false || fail "nats after a start from route-registrar"

  # A STOP outlives a restart of the container; a TERM does not.
  expect 0 podman exec $nats $CR ctl stop nats
  expect 0 podman restart $nats
  wait_until "nats's container-run after restart" 30 podman exec $nats $CR ctl status nats
  is_state $nats $CR nats stopped true || fail "restart undid the STOP: $(state_of $nats $CR nats)"
  probes_say 1 0
  expect 0 podman exec $nats $CR ctl start nats
  expect 0 podman exec $nats /var/vcap/jobs/bpm/bin/bpm stop nats
  is_state $nats $CR nats stopped false || fail "bpm stop: $(state_of $nats $CR nats)"
  expect 0 podman restart $nats
  wait_until "nats running after a TERM and a restart" 30 is_state $nats $CR nats running false
  note "STOP held across podman restart; TERM (bpm stop) did not hold"

  # The init step again while both job containers execute the binary.
  local before
  before=$(podman exec $rr $CR ctl status route_registrar --json | jq .pid)
  # Started, then waited for: `start --attach` fails when the short init
  # step has already exited by the time podman attaches.
  expect 0 podman start $init
  expect 0 podman wait $init
  [ "$(exit_code $init)" = 0 ] || fail "init re-run exited $(exit_code $init)"
  [ "$(podman exec $rr $CR ctl status route_registrar --json | jq .pid)" = "$before" ] ||
    fail "route_registrar restarted by the init step"
  is_state $nats $CR nats running false || fail "nats after the init re-run"
  note "init step re-ran while the binary was busy"

  # The pod's stop: SIGTERM to every container, SIGKILL after the grace
  # period. Everything must end by itself, with 0.
  local grace terms_before
  grace=$(awk '$1 == "terminationGracePeriodSeconds:" { print $2 }' "$yaml")
  [ -n "$grace" ] || fail "no terminationGracePeriodSeconds"
  terms_before=$(count SIGTERM "$data/nats-test/signals")
  local t0=$SECONDS
  expect 0 podman pod stop -t "$grace" $pod
  local took=$((SECONDS - t0)) c
  for c in $nats $rr $init; do
    [ "$(exit_code $c)" = 0 ] || fail "$c exited $(exit_code $c) on pod stop"
  done
  [ "$(count SIGTERM "$data/nats-test/signals")" = $((terms_before + 1)) ] ||
    fail "nats's signals: $(tr '\n' ' ' <"$data/nats-test/signals")"
  [ "$(count 'job_shutdown hash_unchanged BOSH_JOB_STATE={"persistent_disk":0}' "$data/nats-test/drain")" = 1 ] ||
    fail "nats drained: $(cat "$data/nats-test/drain" 2>/dev/null)"
  note "pod stop: drained once, every container exit 0 in ${took}s (grace ${grace}s)"
  podman pod rm -f -t 0 $pod >/dev/null 2>&1
}

# --- drain: garden waits for rep's drain ----------------------------------
scenario_drain() {
  local pod=diego-0 yaml=$T/diego.yaml
  local garden=diego-0-garden rep=diego-0-rep
  cat >"$yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
spec:
  terminationGracePeriodSeconds: 60
  volumes:
    - name: data
      emptyDir: {}
  containers:
    - name: garden
      image: localhost/crt-pod/jobs:1
      command: ["$BAKED"]
      args: ["--job-name=garden", "--", "/var/vcap/jobs/garden/bin/garden"]
      volumeMounts:
        - { name: data, mountPath: /var/vcap/data }
    - name: rep
      image: localhost/crt-pod/jobs:1
      command: ["$BAKED"]
      args: ["--job-name=rep", "--drain-name=/var/vcap/jobs/rep/bin/drain",
             "--drain-timeout=40s", "--", "/var/vcap/jobs/rep/bin/rep"]
      volumeMounts:
        - { name: data, mountPath: /var/vcap/data }
EOF
  [[ $($repo/target/static/container-run --help) == *--drain-name* ]] ||
    fail "container-run has no --drain-name yet (SPEC section 8)"
  play "$yaml"
  wait_until "garden running" 30 is_state $garden $BAKED garden running false
  wait_until "rep running" 30 is_state $rep $BAKED rep running false
  local data events
  data=$(mountpoint_of $rep /var/vcap/data)
  events=$data/diego/events
  wait_until "both jobs logged their start" 10 grep -q "garden start" "$events"
  wait_until "both jobs logged their start" 10 grep -q "rep start" "$events"

  # During the stop the host talks to the sockets on the volume (podman exec
  # waits for the container locks that the stop holds), from inside the
  # pod's network namespace, where the replies' abstract addresses live.
  local netns_pid
  netns_pid=$(podman inspect $garden --format '{{.State.Pid}}')
  cr() { nsenter -t "$netns_pid" -n "$repo/target/static/container-run" "$@"; }
  podman pod stop -t 60 $pod >"$T/pod-stop.log" 2>&1 &
  local stopper=$!
  wait_until "rep's drain called" 30 grep -q -x "rep drain job_shutdown hash_unchanged" "$events"
  local gsock=$data/garden/garden_containerrun.sock rsock=$data/rep/rep_containerrun.sock
  garden_draining() { [ "$(cr ctl status --socket "$gsock" --json | jq -r .state)" = draining ]; }
  wait_until "garden's SIGTERM (it then waits at the barrier)" 30 garden_draining
  grep -q "garden TERM" "$events" && fail "garden's job got SIGTERM while rep drains"
  [ "$(cr ctl status --socket "$rsock" --json | jq -r .drain)" = running ] ||
    fail "rep: $(cr ctl status --socket "$rsock" --json)"
  # Readiness during the drain: the job still serves.
  # As an operator runs it, in the container (its mounts, the default BASE).
  expect 0 nsenter -t "$netns_pid" -n -m "$BAKED" bpm running rep
  note "rep drains; garden holds its job at the barrier"
  touch "$data/diego/release"
  # Until rep's drain (its 2 s wait included) is done, garden's job must
  # not have had SIGTERM: read garden's record first, then rep's state.
  local end=$((SECONDS + 30)) termed drain
  while :; do
    termed=$(grep -c "garden TERM" "$events" || true)
    drain=$(cr ctl status --socket "$rsock" --json 2>/dev/null | jq -r .drain) || drain=gone
    [ "$termed" = 0 ] || [ "$drain" != running ] || fail "garden got SIGTERM before rep's drain was done"
    [ "$drain" = running ] || break
    [ $SECONDS -lt $end ] || fail "rep's drain did not end"
    sleep 0.05
  done
  wait $stopper || fail "podman pod stop: $(cat "$T/pod-stop.log")"
  local c
  for c in $garden $rep; do
    [ "$(exit_code $c)" = 0 ] || fail "$c exited $(exit_code $c)"
  done
  local order
  order=$(grep -n -x -e "rep drain end" -e "garden TERM" "$events" | cut -d: -f2 | tr '\n' ,)
  [ "$order" = "rep drain end,garden TERM," ] || fail "events: $(tr '\n' ' ' <"$events")"
  [ "$(count "rep TERM" "$events")" = 1 ] || fail "events: $(tr '\n' ' ' <"$events")"
  note "garden's SIGTERM came after rep's drain; both exit 0"
  podman pod rm -f -t 0 $pod >/dev/null 2>&1
}

# --- errand: the page's errand pod ends with the errand's status ----------
scenario_errand() {
  local pod=smoke-tests yaml=$T/errand.yaml ctr=smoke-tests-smoke-tests-smoke-tests
  page_pod smoke-tests >"$yaml"
  [ -s "$yaml" ] || fail "no pod smoke-tests in $page"
  [[ $($repo/target/static/container-run --help) == *--errand* ]] ||
    fail "container-run has no --errand yet (SPEC section 9)"
  # The same pod with an errand that fails: its image sets SMOKE_TESTS_EXIT.
  printf 'FROM localhost/crt-pod/jobs:1\nENV SMOKE_TESTS_EXIT=3\n' >"$T/errand-fails.Containerfile"
  podman build -q --network none -t localhost/crt-pod/jobs-failing-errand:1 \
    -f "$T/errand-fails.Containerfile" "$T/ctx/pause" >/dev/null 2>&1 || fail "podman build"
  local status image
  for status in 0 3; do
    image=localhost/crt-pod/jobs:1
    [ $status = 0 ] || image=localhost/crt-pod/jobs-failing-errand:1
    sed "s|localhost/crt-pod/jobs:1|$image|" "$yaml" >"$T/errand-$status.yaml"
    play "$T/errand-$status.yaml"
    wait_until "the errand's container ends by itself" 60 \
      sh -c "[ \"\$(podman inspect $ctr --format '{{.State.Status}}')\" = exited ]"
    [ "$(exit_code $ctr)" = $status ] || fail "errand exited $(exit_code $ctr), not $status"
    [[ $(podman logs $ctr 2>&1) == *"smoke tests ran"* ]] || fail "errand's output: $(podman logs $ctr 2>&1)"
    podman pod rm -f -t 0 $pod >/dev/null 2>&1
  done
  note "the errand pod ended by itself with the errand's status (0, then 3), seen by podman"
}

# --- dumb-init: as the Quarks operator starts container-run ---------------
scenario_dumb-init() {
  local pod=quarks-0 yaml=$T/quarks.yaml ctr=quarks-0-job
  cat >"$yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
spec:
  volumes:
    - name: data
      emptyDir: {}
  containers:
    - name: job
      image: localhost/crt-pod/jobs:1
      command: ["/usr/bin/dumb-init", "--", "$BAKED"]
      args: ["--job-name=counter", "--stop-timeout=3s", "--", "/var/vcap/jobs/counter/bin/counter"]
      volumeMounts:
        - { name: data, mountPath: /var/vcap/data }
EOF
  play "$yaml"
  wait_until "counter running" 30 is_state $ctr $BAKED counter running false
  local data signals
  data=$(mountpoint_of $ctr /var/vcap/data)
  signals=$data/counter/signals
  wait_until "the job's groups" 10 test -s "$data/counter/groups"
  local job_group parent_group
  read -r job_group parent_group <"$data/counter/groups"
  [ "$job_group" != "$parent_group" ] ||
    fail "the job is in container-run's process group ($job_group), which dumb-init signals"
  # The job ignores SIGTERM (it counts them), so each stop ends in SIGKILL.
  expect 0 podman exec $ctr $BAKED ctl stop counter
  [ "$(count TERM "$signals")" = 1 ] || fail "SIGTERMs after STOP: $(count TERM "$signals")"
  expect 0 podman exec $ctr $BAKED ctl start counter
  expect 0 podman stop -t 30 $ctr
  [ "$(exit_code $ctr)" = 0 ] || fail "exit $(exit_code $ctr)"
  [ "$(count TERM "$signals")" = 2 ] || fail "SIGTERMs after podman stop: $(count TERM "$signals") in all"
  note "one SIGTERM per stop under dumb-init; exit 0"
  podman pod rm -f -t 0 $pod >/dev/null 2>&1
}

# --- logs: the pod's log container streams and rotates a job's log -------
scenario_logs() {
  local pod=logger-0 yaml=$T/logs.yaml lines=40000
  local job=logger-0-logger logs=logger-0-logs
  cat >"$yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $pod
spec:
  volumes:
    - name: data
      emptyDir: {}
    - name: sys
      emptyDir: {}
  containers:
    - name: logger
      image: localhost/crt-pod/jobs:1
      command: ["$BAKED"]
      args: ["--job-name=logger", "--", "/var/vcap/jobs/logger/bin/logger"]
      env:
        - { name: LOGGER_LINES, value: "$lines" }
      volumeMounts:
        - { name: data, mountPath: /var/vcap/data }
        - { name: sys, mountPath: /var/vcap/sys }
    - name: logs
      image: localhost/crt-pod/jobs:1
      command: ["$BAKED", "logs", "--rotate-size=64k", "--keep=1000"]
      volumeMounts:
        - { name: sys, mountPath: /var/vcap/sys }
EOF
  play "$yaml"
  wait_until "the logs container watching" 30 sh -c "podman logs $logs 2>&1 | grep -q ': streaming '"
  local data sys
  data=$(mountpoint_of $job /var/vcap/data)
  sys=$(mountpoint_of $logs /var/vcap/sys)
  wait_until "the logger's directory" 30 test -d "$data/logger"
  touch "$data/logger/go"
  wait_until "the logger done" 60 test -e "$data/logger/done"
  local last="logger/logger.stdout.log: logger line $((lines - 1))"
  wait_until "the last line in podman logs" 60 sh -c "podman logs $logs 2>/dev/null | grep -q -x '$last'"
  # Every line once, in order, in what kubectl logs would show.
  seq 0 $((lines - 1)) | sed 's/^/logger line /' >"$T/written"
  podman logs $logs 2>/dev/null | sed -n 's|^logger/logger.stdout.log: ||p' >"$T/streamed"
  cmp -s "$T/written" "$T/streamed" ||
    fail "podman logs differs from what was written: $(diff "$T/written" "$T/streamed" | head -5)"
  # The rotated files, oldest first, then the live file: every byte once.
  local dir=$sys/log/logger n
  n=$(find "$dir" -name 'logger.stdout.log.*.gz' | wc -l)
  [ "$n" -ge 5 ] || fail "only $n rotations: $(podman logs $logs 2>&1 | tail -3)"
  for k in $(seq "$n" -1 1); do gzip -dc "$dir/logger.stdout.log.$k.gz"; done >"$T/kept"
  cat "$dir/logger.stdout.log" >>"$T/kept"
  cmp -s "$T/written" "$T/kept" || fail "rotated + live files differ from what was written"
  [ "$(podman logs $logs 2>&1 | grep -c 'NOT LOSSLESS')" = 0 ] || fail "a rotation was not lossless"
  note "$lines lines in podman logs once and in order; $n rotations, rotated + live files hold every byte"
  expect 0 podman pod stop -t 30 $pod
  [ "$(exit_code $logs)" = 0 ] || fail "the logs container exited $(exit_code $logs)"
  podman pod rm -f -t 0 $pod >/dev/null 2>&1
}

# --- run ------------------------------------------------------------------
passed=0 failed=0 failures=()
for s in "${scenarios[@]}"; do
  echo "tests/pod: $s"
  t0=$SECONDS
  (set -e; "scenario_$s")
  if [ $? = 0 ]; then
    passed=$((passed + 1))
    echo "  ok ($((SECONDS - t0))s)"
  else
    failed=$((failed + 1))
    failures+=("$s")
    echo "  FAILED ($((SECONDS - t0))s)"
    pods=$(podman pod ps -q)
    [ -z "$pods" ] || podman pod rm -f -t 0 $pods >/dev/null 2>&1
  fi
done
echo "tests/pod: ${#scenarios[@]} scenarios in $((SECONDS - started))s${failures[*]:+; failed: ${failures[*]}}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
