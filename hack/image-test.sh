#!/usr/bin/env bash
# `make image-test`: builds the container image here and runs it, hardened as
# the Deployment runs it, against a real control plane:
#
#  1. the static release binary (glibc, crt-static), cached in target/image;
#  2. the image from Containerfile.local, whose runtime stage is Dockerfile's
#     (checked equal here and by tests/image.rs), with podman and runc from
#     Debian's packages, storage and configuration in a temp dir of its own;
#  3. a control plane, the CRD and config/rbac, and a ServiceAccount token
#     mounted where the in-cluster config looks for it;
#  4. the image run with --read-only (no tmpfs), --user 65532:65532,
#     --cap-drop ALL, no-new-privileges, host network; it must lead, write a
#     TeamAccess's RoleBinding under its own ServiceAccount, report Ready,
#     answer /readyz with 200, and exit 0 on SIGTERM.
#
# Prints the image size and how long each step took. Any failure exits
# non-zero with the reason; if podman cannot run here, it says so and fails.
# KEEP_IMAGE_TEST=1 leaves the temp dir (podman storage, control plane logs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

t0=$SECONDS
log() { echo "[image-test] $*" >&2; }
fail() {
  echo "[image-test] FAIL: $*" >&2
  exit 1
}
step_start=$SECONDS
step() { # prints how long the previous step took
  log "$1 ($((SECONDS - step_start))s)"
  step_start=$SECONDS
}

# the same target and flags as Dockerfile's builder (tests/image.rs checks)
TARGET=x86_64-unknown-linux-gnu
STATIC_RUSTFLAGS="-C target-feature=+crt-static"
# its own target dir: release + crt-static would otherwise evict the debug
# build's artifacts, and it stays cached between runs
TARGET_DIR=target/image
IMAGE=localhost/teamaccess:image-test
NAME=teamaccess-image-test-$$
OPERATOR_NS=teamaccess-system
TEST_NS=image-test
GROUP=3f1c2b7a-9d4e-4c5b-8a6f-1e2d3c4b5a69
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

# openssl: the control plane's certificates; podman, runc: build and run the
# image; curl: /readyz; file: is the binary static
hack/ensure-commands.sh openssl podman runc curl file
[ -s "$CA_BUNDLE" ] || hack/ensure-commands.sh update-ca-certificates:ca-certificates
[ -s "$CA_BUNDLE" ] || fail "no CA bundle at $CA_BUNDLE after installing ca-certificates"

work=$(mktemp -d "${TMPDIR:-/tmp}/teamaccess-image-test.XXXXXX")
cp_dir=$work/control-plane
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # only ever the podman of this run (its own storage), never the machine's
  if [ -n "${CONTAINERS_STORAGE_CONF:-}" ]; then
    if [ "$rc" -ne 0 ] && podman container exists "$NAME" 2>/dev/null; then
      echo "--- operator container log (last 30 lines) ---" >&2
      podman logs --tail 30 "$NAME" >&2 2>&1 || true
    fi
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
  fi
  hack/control-plane.sh down "$cp_dir" >/dev/null 2>&1 || true
  # anything podman left mounted under the temp dir, deepest first
  awk -v w="$work" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo 2>/dev/null | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ] || [ -n "${KEEP_IMAGE_TEST:-}" ]; then
    log "state kept in $work"
  else
    rm -rf "$work"
  fi
  [ "$rc" -eq 0 ] || log "FAILED after $((SECONDS - t0))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- podman, configured for this run only --------------------------------
# runc and cgroupfs: no systemd here to manage cgroups. default_ulimits empty:
# podman's default nofile ulimit is above what these machines allow. vfs: no
# overlay mounts to leak, and the image is one small layer. events to a file:
# there is no journald.
mkdir -p "$work/podman"
cat >"$work/podman/containers.conf" <<CONF
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$work/podman/events.log"
tmp_dir = "$work/podman/tmp"
CONF
cat >"$work/podman/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$work/podman/storage"
runroot = "$work/podman/run"
CONF
export CONTAINERS_CONF=$work/podman/containers.conf
export CONTAINERS_STORAGE_CONF=$work/podman/storage.conf
if ! info=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Version}}' 2>&1); then
  fail "podman cannot run here: $info"
fi
log "podman $(podman version --format '{{.Client.Version}}'), runtime: ${info%%$'\n'*}"

# --- the two recipes ship the same runtime stage -------------------------
runtime_stage() { sed -n '/^# ---- runtime stage/,$p' "$1"; }
[ -n "$(runtime_stage Dockerfile)" ] || fail "Dockerfile has no '# ---- runtime stage' marker"
# (a string comparison: diff is not on a base system; `cargo test --test
# image` shows the difference)
if [ "$(runtime_stage Dockerfile)" != "$(runtime_stage Containerfile.local)" ]; then
  fail "the runtime stages of Dockerfile and Containerfile.local differ: what is tested here would not be what ships"
fi
step "podman ready, runtime stages equal"

# --- static binary ---------------------------------------------------------
log "static release build into $TARGET_DIR (minutes when cold, seconds when cached)"
build_start=$SECONDS
# the explicit --target keeps RUSTFLAGS off build scripts and proc macros
RUSTFLAGS=$STATIC_RUSTFLAGS \
  cargo build --release --locked --quiet --target "$TARGET" --target-dir "$TARGET_DIR" --bin teamaccess
build_secs=$((SECONDS - build_start))
bin=$TARGET_DIR/$TARGET/release/teamaccess
kind=$(file -b "$bin")
case "$kind" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) fail "$bin is not statically linked: $kind" ;;
esac
step "static binary: $(du -h "$bin" | cut -f1), ${kind%%, BuildID*}"

# --- image -----------------------------------------------------------------
ctx=$work/context
mkdir -p "$ctx/image"
cp "$bin" "$ctx/teamaccess"
cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
cp -r image/rootfs "$ctx/image/rootfs"
# --pull=never: the recipe must need nothing from a registry
podman build --quiet --pull=never -f Containerfile.local -t "$IMAGE" "$ctx" >/dev/null ||
  fail "podman build failed"
image_bytes=$(podman image inspect --format '{{.Size}}' "$IMAGE")
image_human=$(podman images --format '{{.Size}}' "$IMAGE")
step "image $IMAGE: $image_human ($image_bytes bytes)"
if ! out=$(podman run --rm --network host --read-only --read-only-tmpfs=false --user 65532:65532 \
  --cap-drop ALL --security-opt no-new-privileges "$IMAGE" --version 2>&1); then
  fail "podman cannot run the image here: $out"
fi
log "in the container: $out"

# --- control plane, CRD, RBAC, the ServiceAccount's token ------------------
# shellcheck disable=SC1090
source "$(hack/control-plane.sh up "$cp_dir")"
DIR=$cp_dir
# shellcheck source=hack/operator-lib.sh
. hack/operator-lib.sh
install_operator
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
api_port=${server##*:}
# the three files of the Deployment's kube-api-access volume, as the kubelet
# projects them (mode 0644)
sa=$work/serviceaccount
mkdir -p "$sa"
kubectl create token teamaccess -n "$OPERATOR_NS" --duration=1h >"$sa/token"
for _ in $(seq 100); do
  kubectl get configmap kube-root-ca.crt -n "$OPERATOR_NS" -o jsonpath='{.data.ca\.crt}' >"$sa/ca.crt" 2>/dev/null &&
    [ -s "$sa/ca.crt" ] && break
  sleep 0.2
done
[ -s "$sa/ca.crt" ] || fail "the kube-root-ca.crt ConfigMap did not appear in $OPERATOR_NS"
printf '%s' "$OPERATOR_NS" >"$sa/namespace"
chmod 0755 "$sa" && chmod 0644 "$sa"/*
step "control plane at $server, operator ServiceAccount and RBAC installed"

# --- run the image as the Deployment does ----------------------------------
http_port=
for _ in $(seq 100); do
  # below the kernel's ephemeral range (32768+), where a port no one listens on
  # may still be the local end of a connection and refuse a bind
  p=$((20000 + RANDOM % 12000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then http_port=$p && break; fi
done
[ -n "$http_port" ] || fail "no free port for the operator's HTTP endpoints"
# --read-only-tmpfs=false: podman would otherwise mount writable tmpfs on
# /tmp, /run and /var/tmp, which the Deployment does not have
podman run -d --name "$NAME" --network host \
  --read-only --read-only-tmpfs=false --user 65532:65532 --cap-drop ALL \
  --security-opt no-new-privileges \
  -v "$sa:/var/run/secrets/kubernetes.io/serviceaccount:ro" \
  -e KUBERNETES_SERVICE_HOST=127.0.0.1 -e KUBERNETES_SERVICE_PORT="$api_port" \
  -e POD_NAMESPACE="$OPERATOR_NS" -e POD_NAME="$NAME" \
  -e TEAMACCESS_HTTP_ADDRESS="127.0.0.1:$http_port" \
  "$IMAGE" run --log-format json >/dev/null || fail "podman run failed"

# (into a variable, not `| grep -q`: with pipefail an early grep exit would
# fail the pipeline)
leading=
for _ in $(seq 300); do
  logs=$(podman logs "$NAME" 2>&1)
  if grep -q "leading: reconciling" <<<"$logs"; then leading=yes && break; fi
  [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = true ] ||
    fail "the operator container exited ($(podman inspect --format '{{.State.ExitCode}}' "$NAME"))"
  sleep 0.2
done
[ -n "$leading" ] || fail "the operator did not start leading within 60s"

# what the kernel says about the process, not what podman was asked
pid=$(podman inspect --format '{{.State.Pid}}' "$NAME")
status=$(cat "/proc/$pid/status")
grep -Eq $'^Uid:\t65532\t65532\t65532\t65532$' <<<"$status" || fail "not running as uid 65532: $(grep ^Uid <<<"$status")"
grep -Eq $'^Gid:\t65532\t65532\t65532\t65532$' <<<"$status" || fail "not running as gid 65532: $(grep ^Gid <<<"$status")"
grep -Eq $'^CapEff:\t0+$' <<<"$status" || fail "has capabilities: $(grep ^CapEff <<<"$status")"
grep -Eq $'^NoNewPrivs:\t1$' <<<"$status" || fail "no_new_privs is not set"
root_opts=$(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo")
[[ ,$root_opts, == *,ro,* ]] || fail "the root filesystem is not read-only: $root_opts"
# the file systems mounted read-write, apart from the kernel's (proc, sysfs,
# cgroup, devpts, mqueue): what the operator could have relied on writing to
writable=$(awk '{
    for (i = 7; $i != "-"; i++) {}
    split($6, o, ",")
    if (o[1] == "rw" && $(i + 1) !~ /^(proc|sysfs|cgroup2?|devpts|mqueue)$/) print $5 " (" $(i + 1) ")"
  }' "/proc/$pid/mountinfo" | paste -sd' ')
step "leading; uid/gid 65532, no capabilities, no_new_privs, root read-only; read-write: ${writable:-nothing}"

# --- it reconciles ---------------------------------------------------------
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $TEST_NS
---
apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata:
  name: image-test
spec:
  groups:
    - id: $GROUP
      name: image-testers
  grants:
    - tier: Reader
      namespaces: [$TEST_NS]
YAML
kubectl wait --for=condition=Ready teamaccess/image-test --timeout=60s >/dev/null ||
  fail "TeamAccess image-test did not become Ready: $(kubectl get teamaccess image-test -o jsonpath='{.status.conditions}')"
kubectl get rolebinding teamaccess-image-test -n "$TEST_NS" >/dev/null ||
  fail "no RoleBinding teamaccess-image-test in $TEST_NS"
[ "$(kubectl auth can-i list pods -n "$TEST_NS" --as=someone@example.com --as-group="$GROUP")" = yes ] ||
  fail "a member of the group cannot list pods in $TEST_NS"
# the audit log says who wrote it: the container, under its ServiceAccount
creates=$(grep -F '"resource":"rolebindings"' "$TEAMACCESS_TEST_AUDIT_LOG" | grep -F '"verb":"create"' |
  grep -cF "\"username\":\"system:serviceaccount:$OPERATOR_NS:teamaccess\"" || true)
[ "${creates:-0}" -gt 0 ] ||
  fail "the audit log has no RoleBinding create by system:serviceaccount:$OPERATOR_NS:teamaccess"
step "TeamAccess Ready, RoleBinding written by the ServiceAccount, group can list pods"

for path in readyz healthz; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/$path") || true
  [ "$code" = 200 ] || fail "/$path answered ${code:-nothing}, not 200"
done
step "/readyz and /healthz: 200"

# PID 1 in a container has no default signal handlers: only the operator's
# own SIGTERM handling makes it stop before the kill timeout
stop_start=$SECONDS
podman stop -t 20 "$NAME" >/dev/null
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$exit_code" = 0 ] || fail "after SIGTERM the operator exited $exit_code, not 0"
step "SIGTERM: exited 0 in $((SECONDS - stop_start))s"

log "PASS in $((SECONDS - t0))s: static build ${build_secs}s, image $image_human ($image_bytes bytes)"
