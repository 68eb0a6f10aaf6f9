#!/usr/bin/env bash
# Provision the real parts the docker integration tests use (see
# ../shared/ENVIRONMENT.md): a Docker engine, a local registry on
# 127.0.0.1:5000 and an offline Python base image.
#
#   bash .ci/provision.sh
#
# Idempotent and quick when everything is already up: each step first checks
# whether its work is done and skips it if so. Runs as root on a bare Debian 12
# machine (CI); on a provisioned machine any user who can reach the engine can
# run it. Concurrent runs are serialised by a lock. Daemons it starts keep
# running after it exits; their logs and data live under $STATE_DIR.
#
# Steps (one line each on stdout, with its duration):
#   packages  apt-get install docker.io docker-registry debootstrap skopeo git procps time jq npm (if missing)
#   engine    dockerd --iptables=false --bridge=none, overlay2 storage in /var/lib/docker-overlay2
#             (vfs in /var/lib/docker where overlayfs cannot mount) (unless `docker info` answers)
#   registry  docker-registry serve on 127.0.0.1:5000 (unless /v2/ answers)
#   image     flyte-build-test/python:3.11 pulled from the registry's copy, or via debootstrap +
#             docker import (unless present)
#   push      a copy as 127.0.0.1:5000/flyte-build/base:py3.11 (unless the registry has it)
#   azurite   npm install -g azurite, the Azure Storage emulator the az:// tests start (unless on PATH)
#   buildgrid pip install buildgrid (a REAPI v2 server the grpc:// tests start) in its own venv under
#             $STATE_DIR/buildgrid: 0.9.1 on Python 3.13 (pyenv's), else 0.4.4 on python3 (unless installed)
set -euo pipefail

readonly BASE_IMAGE="flyte-build-test/python:3.11"
readonly REGISTRY_ADDR="127.0.0.1:5000"
readonly REGISTRY_IMAGE="${REGISTRY_ADDR}/flyte-build/base:py3.11"
readonly SUITE="bookworm"
readonly STATE_DIR="/tmp/flyte-build-ci"
readonly MANIFEST_ACCEPT="application/vnd.docker.distribution.manifest.v2+json"

export PATH="${PATH}:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

mkdir -p "${STATE_DIR}"
chmod 1777 "${STATE_DIR}" 2>/dev/null || true

# One provisioner at a time on a machine. Daemons are started with this fd
# closed (9>&-) so they do not hold the lock after the script exits.
readonly LOCK="${STATE_DIR}/provision.lock"
touch "${LOCK}" 2>/dev/null || true
chmod 0666 "${LOCK}" 2>/dev/null || true
exec 9>>"${LOCK}"
flock 9

log() { echo "provision: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# run_step NAME FUNCTION: run FUNCTION (which sets STATUS) and print one line.
STATUS=""
run_step() {
    local name=$1 fn=$2 t0 ms
    t0=$(now_ms)
    STATUS=""
    "${fn}"
    ms=$(( $(now_ms) - t0 ))
    printf 'provision: %-9s %-52s %4d.%01ds\n' "${name}" "${STATUS}" $(( ms / 1000 )) $(( ms % 1000 / 100 ))
}

# logged LOGFILE CMD...: run CMD with its output in LOGFILE; on failure show the tail.
logged() {
    local logfile=$1; shift
    if ! "$@" >"${logfile}" 2>&1 </dev/null; then
        log "command failed: $* (last lines of ${logfile}):"
        tail -n 30 "${logfile}" >&2
        return 1
    fi
}

need_root() {
    [[ ${EUID} -eq 0 ]] || die "$1 needs root; run this script as root (CI does)"
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }
registry_answers() { curl -sf --noproxy '*' -m 5 -o /dev/null "http://${REGISTRY_ADDR}/v2/"; }

# --- packages ---------------------------------------------------------------

step_packages() {
    # binary -> Debian package
    local -A wanted=(
        [dockerd]=docker.io
        [docker-registry]=docker-registry
        [debootstrap]=debootstrap
        [skopeo]=skopeo
        [curl]=curl
        # the tests' own needs: GitRepo commits sample repositories (git),
        # and the engine step looks for a starting dockerd (pgrep)
        [git]=git
        [pgrep]=procps
        # tests/test_affected_ci.py runs BUILD.md's workflow, whose steps use
        # jq (present on GitHub's runners, not on a bare Debian)
        [jq]=jq
        # the azurite step installs Azurite from the npm registry
        [npm]=npm
    )
    local bin missing=()
    for bin in "${!wanted[@]}"; do
        command -v "${bin}" >/dev/null 2>&1 || missing+=("${wanted[${bin}]}")
    done
    # the large-file test measures its peak RSS with GNU time (`time` is also a shell keyword)
    [[ -x /usr/bin/time ]] || missing+=(time)
    [[ -e /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
    [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
    if (( ${#missing[@]} == 0 )); then
        STATUS="present"
        return
    fi
    need_root "installing ${missing[*]}"
    local apt_opts=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    logged "${STATE_DIR}/apt-update.log" apt-get "${apt_opts[@]}" update
    logged "${STATE_DIR}/apt-install.log" apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"
    STATUS="installed ${missing[*]}"
}

# --- engine -----------------------------------------------------------------

# overlay2 when the kernel mounts overlayfs on the engine's data root: layers
# and containers then share their files. vfs otherwise, where every layer and
# every container start is a full copy (minutes of the docker tests, and
# gigabytes a session). Probed with a real mount, as dockerd would need it.
storage_driver() {
    local root=/var/lib/docker-overlay2 probe
    if ! mkdir -p "${root}" 2>/dev/null || ! probe=$(mktemp -d "${root}/overlay-probe.XXXXXX" 2>/dev/null); then
        echo vfs
        return
    fi
    mkdir -p "${probe}/lower" "${probe}/upper" "${probe}/work" "${probe}/merged"
    if mount -t overlay overlay -o "lowerdir=${probe}/lower,upperdir=${probe}/upper,workdir=${probe}/work" \
        "${probe}/merged" >/dev/null 2>&1; then
        umount "${probe}/merged"
        echo overlay2
    else
        echo vfs
    fi
    rm -rf --one-file-system "${probe}"
}

step_engine() {
    if engine_answers; then
        STATUS="already running"
        return
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        need_root "starting dockerd"
        # A systemd unit that failed to start (e.g. no iptables in this
        # sandbox) would fight ours for the socket: stop it first.
        if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
            systemctl stop docker.socket docker.service >/dev/null 2>&1 || true
        fi
        local driver root=/var/lib/docker
        driver=$(storage_driver) || driver=vfs
        # overlay2 gets a data root of its own: BuildKit's state under a root an engine
        # used with vfs names vfs snapshots, and builds on it fail ("failed to read
        # dockerfile: stat .../overlay2/...: no such file"). An earlier vfs root is left
        # as it is (remove /var/lib/docker/vfs by hand to reclaim its space).
        if [[ ${driver} == overlay2 ]]; then root=/var/lib/docker-overlay2; fi
        setsid -f dockerd --iptables=false --bridge=none --storage-driver="${driver}" --data-root="${root}" \
            >"${STATE_DIR}/dockerd.log" 2>&1 </dev/null 9>&-
        STATUS="started dockerd, ${driver} storage in ${root} (log ${STATE_DIR}/dockerd.log)"
    else
        STATUS="waited for a starting dockerd"
    fi
    wait_for engine_answers 60 "${STATE_DIR}/dockerd.log" "dockerd did not answer 'docker info' within 60 s"
}

# wait_for CHECK SECONDS LOG MESSAGE: poll CHECK until it succeeds; on time-out
# show the daemon's log tail and stop with MESSAGE.
wait_for() {
    local check=$1 deadline=$(( SECONDS + $2 )) log=$3 message=$4
    until "${check}"; do
        if (( SECONDS >= deadline )); then
            tail -n 30 "${log}" >&2 || true
            die "${message}"
        fi
        sleep 0.3
    done
}

# --- registry ---------------------------------------------------------------

step_registry() {
    if registry_answers; then
        STATUS="already serving ${REGISTRY_ADDR}"
        return
    fi
    local conf="${STATE_DIR}/registry/config.yml"
    mkdir -p "${STATE_DIR}/registry/data"
    cat >"${conf}" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: ${STATE_DIR}/registry/data
  delete:
    enabled: true
http:
  addr: ${REGISTRY_ADDR}
EOF
    setsid -f docker-registry serve "${conf}" \
        >"${STATE_DIR}/registry/registry.log" 2>&1 </dev/null 9>&-
    wait_for registry_answers 30 "${STATE_DIR}/registry/registry.log" \
        "docker-registry did not answer http://${REGISTRY_ADDR}/v2/ within 30 s"
    STATUS="started on ${REGISTRY_ADDR} (data ${STATE_DIR}/registry/data)"
}

# --- base image -------------------------------------------------------------

# The Debian mirror apt is configured with for $SUITE: the first URI of a deb
# entry carrying that suite, from deb822 *.sources files or one-line *.list
# files (apt reads only those two suffixes).
debian_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f ${f} ]] || continue
        awk -v suite="${SUITE}" '
            function flush() {
                if (deb && has_suite && !disabled && uri != "") { print uri; found = 1; exit }
                deb = 0; has_suite = 0; disabled = 0; uri = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:"  { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
            tolower($1) == "uris:"   { uri = $2 }
            tolower($1) == "enabled:" && tolower($2) == "no" { disabled = 1 }
            END { if (!found) flush() }
        ' "${f}"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f ${f} ]] || continue
        # deb [opts] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "${f}" | awk -v suite="${SUITE}" '$1 == "deb" && $3 == suite { print $2 }'
    done
}

# Host pip settings a container with --network host needs to reach the same
# index: index-url, extra-index-url, trusted-host and proxy (from pip's config
# files and PIP_* variables, later sources winning), plus https_proxy. Local
# (file:// or path) indexes and find-links do not exist inside the image and
# are left out.
write_pip_conf() {
    local out=$1 line key value
    local -A pip=()
    local pipcmd=()
    if python3 -m pip --version >/dev/null 2>&1; then
        pipcmd=(python3 -m pip)
    elif command -v pip >/dev/null 2>&1; then
        pipcmd=(pip)
    fi
    if (( ${#pipcmd[@]} )); then
        # Lines look like: global.index-url='https://...'  or  :env:.proxy='...'
        while IFS= read -r line; do
            key=${line%%=*}; key=${key#*.}
            value=${line#*=}; value=${value#\'}; value=${value%\'}
            case ${key} in
                index-url|extra-index-url|trusted-host|proxy) pip[${key}]=${value} ;;
            esac
        done < <("${pipcmd[@]}" config list 2>/dev/null || true)
    fi
    if [[ -n ${PIP_INDEX_URL:-} ]]; then pip[index-url]=${PIP_INDEX_URL}; fi
    if [[ -n ${PIP_EXTRA_INDEX_URL:-} ]]; then pip[extra-index-url]=${PIP_EXTRA_INDEX_URL}; fi
    if [[ -n ${PIP_TRUSTED_HOST:-} ]]; then pip[trusted-host]=${PIP_TRUSTED_HOST}; fi
    if [[ -n ${PIP_PROXY:-} ]]; then pip[proxy]=${PIP_PROXY}; fi
    local https_proxy_value=${https_proxy:-${HTTPS_PROXY:-}}
    if [[ -z ${pip[proxy]:-} && -n ${https_proxy_value} ]]; then pip[proxy]=${https_proxy_value}; fi

    # Keep only network indexes.
    local url kept
    for key in index-url extra-index-url; do
        [[ -n ${pip[${key}]:-} ]] || continue
        kept=""
        for url in ${pip[${key}]}; do
            if [[ ${url} == http://* || ${url} == https://* ]]; then kept+="${kept:+ }${url}"; fi
        done
        pip[${key}]=${kept}
    done

    {
        echo "# Written by flyte-build .ci/provision.sh from the host's pip settings."
        echo "[global]"
        echo "cert = /etc/ssl/certs/ca-certificates.crt"
        for key in index-url extra-index-url trusted-host proxy; do
            if [[ -n ${pip[${key}]:-} ]]; then echo "${key} = ${pip[${key}]}"; fi
        done
    } >"${out}"
}

ROOTFS_PARENT=""
cleanup_rootfs() {
    [[ -n ${ROOTFS_PARENT} && -d ${ROOTFS_PARENT} ]] || return 0
    # debootstrap mounts proc/sys inside the target; never rm -rf through them.
    awk -v p="${ROOTFS_PARENT}/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
        while IFS= read -r m; do umount -l "${m}" 2>/dev/null || true; done
    rm -rf --one-file-system "${ROOTFS_PARENT}"
}

step_image() {
    if docker image inspect "${BASE_IMAGE}" >/dev/null 2>&1; then
        STATUS="${BASE_IMAGE} present"
        return
    fi
    # The registry keeps the copy an earlier run pushed (an engine restarted with
    # another storage driver sees none of its old images): the same image id, in seconds.
    if [[ -n $(registry_digest || true) ]] && docker pull -q "${REGISTRY_IMAGE}" >/dev/null 2>&1; then
        docker tag "${REGISTRY_IMAGE}" "${BASE_IMAGE}"
        STATUS="pulled ${BASE_IMAGE} from ${REGISTRY_IMAGE}"
        return
    fi
    need_root "debootstrap"
    local mirror
    mirror=$(debian_mirror | head -n 1)
    [[ -n ${mirror} ]] || { mirror="http://deb.debian.org/debian"; log "no ${SUITE} entry in apt sources; using ${mirror}"; }
    # apt's proxy, if any, for debootstrap's downloads.
    local apt_proxy
    apt_proxy=$(apt-config shell P Acquire::http::Proxy 2>/dev/null | sed -n "s/^P='\(.*\)'$/\1/p")
    if [[ -n ${apt_proxy} && -z ${http_proxy:-} ]]; then export http_proxy=${apt_proxy}; fi

    ROOTFS_PARENT=$(mktemp -d "${STATE_DIR}/rootfs.XXXXXX")
    trap cleanup_rootfs EXIT
    local rootfs="${ROOTFS_PARENT}/rootfs"
    logged "${STATE_DIR}/debootstrap.log" debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        "${SUITE}" "${rootfs}" "${mirror}"

    # HTTPS from containers passes an intercepting proxy whose CA is only in
    # the host's bundle: ship that bundle as the system bundle, and also as a
    # local CA so an `update-ca-certificates` in a derived image keeps it.
    local bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
    [[ -f ${bundle} ]] || bundle=/etc/ssl/certs/ca-certificates.crt
    install -m 0644 "${bundle}" "${rootfs}/etc/ssl/certs/ca-certificates.crt"
    install -m 0644 "${bundle}" "${rootfs}/usr/local/share/ca-certificates/flyte-build-host-bundle.crt"
    write_pip_conf "${rootfs}/etc/pip.conf"
    # Debian 12 marks its Python externally managed (PEP 668); images built on
    # this base `pip install` into it. ENV PIP_BREAK_SYSTEM_PACKAGES=1 below
    # says so, and removing the marker keeps it working under `env -i` too.
    rm -f "${rootfs}"/usr/lib/python3*/EXTERNALLY-MANAGED
    ln -sf python3 "${rootfs}/usr/bin/python"
    rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*

    local python_version
    python_version=$(chroot "${rootfs}" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [[ ${python_version} == 3.11 ]] || die "debootstrap gave Python ${python_version}, expected 3.11"

    tar -C "${rootfs}" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change 'ENV PIP_DISABLE_PIP_VERSION_CHECK=1' \
        --change 'CMD ["python3"]' \
        - "${BASE_IMAGE}" >/dev/null
    cleanup_rootfs
    trap - EXIT
    STATUS="built ${BASE_IMAGE} from ${mirror}"
}

# --- push -------------------------------------------------------------------

# Digest of NAME:TAG in the registry, empty if absent.
registry_digest() {
    local name=${REGISTRY_IMAGE#"${REGISTRY_ADDR}/"}
    curl -sfI --noproxy '*' -m 10 -H "Accept: ${MANIFEST_ACCEPT}" \
        "http://${REGISTRY_ADDR}/v2/${name%:*}/manifests/${name##*:}" |
        tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

step_push() {
    local image_id local_digests remote
    image_id=$(docker image inspect -f '{{.Id}}' "${BASE_IMAGE}")
    # Already pushed from this very image: its RepoDigests name the registry's digest.
    remote=$(registry_digest || true)
    local_digests=$(docker image inspect -f '{{join .RepoDigests " "}}' "${image_id}")
    if [[ -n ${remote} && " ${local_digests} " == *" ${REGISTRY_IMAGE%:*}@${remote} "* ]]; then
        STATUS="${REGISTRY_IMAGE} up to date"
        return
    fi
    docker tag "${BASE_IMAGE}" "${REGISTRY_IMAGE}"
    logged "${STATE_DIR}/push.log" docker push "${REGISTRY_IMAGE}"
    STATUS="pushed ${REGISTRY_IMAGE}@$(registry_digest)"
}

# --- azurite ----------------------------------------------------------------

step_azurite() {
    # tests/support/servers.py starts `azurite-blob` on a free port per test session
    if command -v azurite-blob >/dev/null 2>&1; then
        STATUS="$(azurite-blob --version 2>/dev/null | tail -n 1) present"
        return
    fi
    need_root "npm install -g azurite"
    # HTTPS may pass an intercepting proxy whose CA is only in the system bundle: let node trust it too
    local bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
    if [[ -z ${NODE_EXTRA_CA_CERTS:-} && -f ${bundle} ]]; then export NODE_EXTRA_CA_CERTS=${bundle}; fi
    logged "${STATE_DIR}/npm-azurite.log" npm install -g --no-audit --no-fund azurite
    command -v azurite-blob >/dev/null 2>&1 || die "npm installed azurite but azurite-blob is not on PATH ($(npm prefix -g)/bin)"
    STATUS="installed azurite $(azurite-blob --version 2>/dev/null | tail -n 1)"
}

# --- buildgrid --------------------------------------------------------------

readonly BUILDGRID_VENV="${STATE_DIR}/buildgrid"

# python3.13 on PATH or under pyenv (BuildGrid 0.9.1 needs >= 3.13), or nothing
python313() {
    local candidate
    # pyenv's own install first: its shim on PATH fails unless 3.13 is selected
    for candidate in "$(pyenv root 2>/dev/null || echo "${HOME}/.pyenv")"/versions/3.13*/bin/python3.13 \
        "$(command -v python3.13 || true)"; do
        if [[ -n ${candidate} && -x ${candidate} ]] && "${candidate}" -c 'import sys; assert sys.version_info >= (3, 13)' 2>/dev/null; then
            echo "${candidate}"
            return
        fi
    done
}

step_buildgrid() {
    # tests/support/buildgrid.py starts `bgd server start CONFIG` on a free port per test session
    local version
    version=$("${BUILDGRID_VENV}/bin/python" -c 'from importlib.metadata import version; print(version("buildgrid"))' 2>/dev/null || true)
    if [[ -n ${version} && -x ${BUILDGRID_VENV}/bin/bgd ]]; then
        STATUS="buildgrid ${version} present"
        return
    fi
    local py spec
    py=$(python313)
    if [[ -n ${py} ]]; then spec="buildgrid==0.9.1"; else py=python3; spec="buildgrid==0.4.4"; fi
    rm -rf "${BUILDGRID_VENV}"
    logged "${STATE_DIR}/buildgrid-venv.log" "${py}" -m venv "${BUILDGRID_VENV}"
    logged "${STATE_DIR}/buildgrid-pip.log" "${BUILDGRID_VENV}/bin/pip" install -q "${spec}"
    [[ -x ${BUILDGRID_VENV}/bin/bgd ]] || die "pip installed ${spec} but ${BUILDGRID_VENV}/bin/bgd is missing"
    STATUS="installed ${spec} ($("${py}" -c 'import platform; print(platform.python_version())'))"
}

main() {
    local t0 ms
    t0=$(now_ms)
    run_step packages step_packages
    run_step engine step_engine
    run_step registry step_registry
    run_step image step_image
    run_step push step_push
    run_step azurite step_azurite
    run_step buildgrid step_buildgrid
    ms=$(( $(now_ms) - t0 ))
    printf 'provision: %-9s %-52s %4d.%01ds\n' total "ready" $(( ms / 1000 )) $(( ms % 1000 / 100 ))
}

main "$@"
