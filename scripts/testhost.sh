#!/usr/bin/env bash
# Turn this Debian bookworm machine into a real Docker host reachable over SSH
# on loopback, for sandboxer's end-to-end tests and the quick start.
#
# Usage (as root, no stdin needed):
#   scripts/testhost.sh              set everything up (idempotent), then check
#   scripts/testhost.sh --print-env  the same, then print `export` lines only
#   scripts/testhost.sh --stop       stop the dedicated sshd (dockerd stays up)
#
# What it sets up, each step skipped when already done:
#   - packages: docker.io, docker-compose (Compose v1), openssh-server,
#     busybox-static, ... (apt-get update + install only if one is missing);
#   - dockerd, started in the background when `docker info` fails, logging to
#     /var/log/sandboxer-dockerd.log (there is no systemd here);
#   - users `sandboxer` (in group docker) and `sandboxer-nodocker` (not in it,
#     for tests of a user who may not use the Docker socket);
#   - a dedicated sshd on 127.0.0.1:$SANDBOXER_TESTHOST_PORT with its own host
#     key, config, pid file and log under the state directory, and a client
#     key pair whose public half both users authorise;
#   - the base image sandboxer/base:latest, imported from a busybox-static
#     rootfs plus GNU tar (see build_rootfs), rebuilt when its recipe changes;
#   - the hosts `testhost` and `testhost-nodocker` in sandboxer's config file.
#
# Environment:
#   SANDBOXER_TESTHOST_DIR   state directory (default /var/lib/sandboxer-testhost)
#   SANDBOXER_TESTHOST_PORT  sshd port on 127.0.0.1 (default 2222)
#   SANDBOXER_CONFIG         config file (default
#                            ${XDG_CONFIG_HOME:-$HOME/.config}/sandboxer/config.toml)
#
# Progress goes to stderr as `testhost: ...` lines; stdout is kept for
# --print-env.
set -euo pipefail

readonly STATE_DIR="${SANDBOXER_TESTHOST_DIR:-/var/lib/sandboxer-testhost}"
readonly PORT="${SANDBOXER_TESTHOST_PORT:-2222}"
readonly ADDRESS=127.0.0.1
readonly DOCKER_USER=sandboxer
readonly NODOCKER_USER=sandboxer-nodocker
readonly IMAGE=sandboxer/base:latest
readonly DOCKERD_LOG=/var/log/sandboxer-dockerd.log
readonly DEADLINE_SECONDS=60
readonly IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

readonly HOST_KEY="$STATE_DIR/ssh_host_ed25519_key"
readonly CLIENT_KEY="$STATE_DIR/client_ed25519"
readonly KNOWN_HOSTS="$STATE_DIR/known_hosts"
readonly SSHD_CONFIG="$STATE_DIR/sshd_config"
readonly SSHD_PID_FILE="$STATE_DIR/sshd.pid"
readonly SSHD_LOG="$STATE_DIR/sshd.log"
readonly SSHD=/usr/sbin/sshd

readonly PACKAGES=(
    docker.io docker-compose tini iptables
    openssh-server openssh-client
    busybox-static tar python3 util-linux
)

log() { printf 'testhost: %s\n' "$*" >&2; }

die() {
    log "error: $*"
    exit 1
}

url_for() { printf 'ssh://%s@%s:%s' "$1" "$ADDRESS" "$PORT"; }

config_file() {
    local home="${HOME:-}"
    if [[ -z "$home" ]]; then
        home="$(getent passwd "$(id -u)" | cut -d: -f6)"
    fi
    local default="${XDG_CONFIG_HOME:-$home/.config}/sandboxer/config.toml"
    printf '%s' "${SANDBOXER_CONFIG:-$default}"
}

# Replace FILE with the content of TEMP only when they differ, so that a second
# run leaves files (and their timestamps) alone. Prints "changed" when it wrote.
install_if_changed() {
    local temp=$1 file=$2 mode=$3
    if [[ -f "$file" ]] && cmp -s "$temp" "$file"; then
        rm -f "$temp"
        chmod "$mode" "$file"
        return 0
    fi
    chmod "$mode" "$temp"
    mv -f "$temp" "$file"
    echo changed
}

# Close every file descriptor above 2 in the current (sub)shell.
close_inherited_fds() {
    local path fd
    for path in /proc/self/fd/*; do
        fd="${path##*/}"
        if ((fd > 2)); then
            exec {fd}>&-
        fi
    done
}

# --- 1. packages -------------------------------------------------------------

missing_packages() {
    local package status
    for package in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null)" ||
            status=""
        [[ "$status" == "ii "* ]] || printf '%s\n' "$package"
    done
}

ensure_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Another apt-get may hold the dpkg lock (an image build, unattended
    # upgrades); wait for it rather than fail.
    local apt_options=(-q -o DPkg::Lock::Timeout=600)
    local attempt
    for attempt in 1 2 3 4 5; do
        apt-get "${apt_options[@]}" update >&2 && break
        ((attempt < 5)) || die "apt-get update failed"
        sleep 5
    done
    # With recommends, as the verified install did: docker.io recommends
    # apparmor, which dockerd needs where the kernel has AppArmor enabled.
    apt-get "${apt_options[@]}" install -y "${missing[@]}" >&2 ||
        die "apt-get install ${missing[*]} failed"
}

# --- 2. dockerd --------------------------------------------------------------

docker_is_up() {
    local version
    version="$(docker info --format '{{.ServerVersion}}' 2>/dev/null)" || return 1
    [[ -n "$version" ]]
}

dockerd_is_running() {
    local pid
    pid="$(cat /var/run/docker.pid 2>/dev/null)" || return 1
    [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]
}

ensure_dockerd() {
    if docker_is_up; then
        return 0
    fi
    if dockerd_is_running; then
        log "dockerd is starting; waiting for it"
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        # No systemd: detach dockerd from this script's session so that it
        # outlives the script. It must not inherit our lock or a caller's pipe
        # (a caller waiting for EOF would hang), nor keep the caller's
        # directory busy.
        (
            cd /
            close_inherited_fds
            exec setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null
        ) &
    fi
    local deadline=$((SECONDS + DEADLINE_SECONDS))
    until docker_is_up; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer \`docker info\` within" \
                "${DEADLINE_SECONDS}s; see $DOCKERD_LOG"
        fi
        sleep 0.2
    done
}

# --- 3. users and keys -------------------------------------------------------

ensure_key() {
    local key=$1 comment=$2
    if [[ ! -f "$key" ]]; then
        log "generating $key"
        ssh-keygen -q -t ed25519 -N '' -C "$comment" -f "$key" </dev/null
    fi
    chmod 600 "$key"
    if [[ ! -f "$key.pub" ]]; then
        ssh-keygen -y -f "$key" >"$key.pub"
    fi
    chmod 644 "$key.pub"
}

ensure_user() {
    local user=$1 wants_docker=$2 home="/home/$1"
    if ! id -u "$user" >/dev/null 2>&1; then
        log "creating user $user"
        useradd --create-home --home-dir "$home" --shell /bin/sh "$user"
    fi
    [[ "$(getent passwd "$user" | cut -d: -f7)" == /bin/sh ]] ||
        usermod --shell /bin/sh "$user"

    local in_docker=no
    if [[ " $(id -nG "$user") " == *" docker "* ]]; then
        in_docker=yes
    fi
    if [[ "$wants_docker" == yes && "$in_docker" == no ]]; then
        usermod -aG docker "$user"
    elif [[ "$wants_docker" == no && "$in_docker" == yes ]]; then
        gpasswd -d "$user" docker >/dev/null
    fi

    # `*` rather than useradd's `!`: no password can match, yet the account
    # is not "locked", which sshd without PAM would refuse even for keys.
    [[ "$(getent shadow "$user" | cut -d: -f2)" == '*' ]] ||
        usermod -p '*' "$user"

    local group public_key
    group="$(id -gn "$user")"
    public_key="$(cat "$CLIENT_KEY.pub")"
    install -d -m 700 -o "$user" -g "$group" "$home/.ssh"
    [[ -e "$home/.ssh/authorized_keys" ]] || : >"$home/.ssh/authorized_keys"
    grep -qxF "$public_key" "$home/.ssh/authorized_keys" ||
        printf '%s\n' "$public_key" >>"$home/.ssh/authorized_keys"
    chown "$user:$group" "$home" "$home/.ssh/authorized_keys"
    chmod go-w "$home"
    chmod 600 "$home/.ssh/authorized_keys"
}

# --- 4. the dedicated sshd ---------------------------------------------------

write_sshd_config() {
    cat <<EOF
# Written by scripts/testhost.sh on every run; edits here are lost.
# A dedicated sshd for sandboxer's test host, separate from any system sshd.
ListenAddress $ADDRESS
Port $PORT
HostKey $HOST_KEY
PidFile $SSHD_PID_FILE

AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $DOCKER_USER $NODOCKER_USER
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
# Without PAM a session starts faster; the users' password field is '*'.
UsePAM no
# No AcceptEnv line: no environment variable from the client is accepted.
PermitUserEnvironment no

# Tests open many connections and many channels on each.
MaxSessions 64
MaxStartups 64:30:128
UseDNS no
PrintMotd no
PrintLastLog no

# Forwarding the Docker socket (streamlocal) and file copy (sftp) are used.
AllowStreamLocalForwarding yes
AllowTcpForwarding yes
X11Forwarding no
Subsystem sftp internal-sftp
EOF
}

sshd_pid() {
    local pid command_line
    pid="$(cat "$SSHD_PID_FILE" 2>/dev/null)" || return 1
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    # Ours only if it was started with our config file.
    command_line="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$command_line" == *" -f $SSHD_CONFIG "* ]] || return 1
    printf '%s' "$pid"
}

port_accepts() {
    (exec 3<>"/dev/tcp/$ADDRESS/$PORT") 2>/dev/null
}

ensure_sshd() {
    local temp changed pid
    # sshd's privilege separation directory; /run is emptied at boot.
    install -d -m 755 /run/sshd
    temp="$(mktemp "$SSHD_CONFIG.XXXXXX")"
    write_sshd_config >"$temp"
    if ! "$SSHD" -t -f "$temp"; then
        rm -f "$temp"
        die "sshd rejected the generated config"
    fi
    changed="$(install_if_changed "$temp" "$SSHD_CONFIG" 644)"

    # A restart rather than SIGHUP: sshd re-executes itself on SIGHUP and a
    # connection made meanwhile is refused, so "listening" could not be told
    # apart from "about to restart". Open sessions survive either way.
    if [[ -n "$changed" ]] && sshd_pid >/dev/null; then
        log "sshd config changed; restarting sshd"
        stop_sshd
    fi
    if ! pid="$(sshd_pid)"; then
        if port_accepts; then
            die "$ADDRESS:$PORT is in use by another program;" \
                "stop it or set SANDBOXER_TESTHOST_PORT"
        fi
        rm -f "$SSHD_PID_FILE"
        log "starting sshd on $ADDRESS:$PORT (log: $SSHD_LOG)"
        "$SSHD" -f "$SSHD_CONFIG" -E "$SSHD_LOG" 9>&-
    fi

    local deadline=$((SECONDS + DEADLINE_SECONDS))
    until sshd_pid >/dev/null && port_accepts; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$SSHD_LOG" >&2 || true
            die "sshd did not listen on $ADDRESS:$PORT within" \
                "${DEADLINE_SECONDS}s; see $SSHD_LOG"
        fi
        sleep 0.1
    done
}

stop_sshd() {
    local pid
    if ! pid="$(sshd_pid)"; then
        log "sshd is not running"
        return 0
    fi
    log "stopping sshd (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || die "sshd (pid $pid) did not stop"
        sleep 0.1
    done
    rm -f "$SSHD_PID_FILE"
}

# --- 5. known_hosts ----------------------------------------------------------

ensure_known_hosts() {
    local host_pattern="[$ADDRESS]:$PORT" key_type key_data temp
    # OpenSSH writes the port only when it is not 22.
    [[ "$PORT" != 22 ]] || host_pattern="$ADDRESS"
    read -r key_type key_data _ <"$HOST_KEY.pub"
    temp="$(mktemp "$KNOWN_HOSTS.XXXXXX")"
    printf '%s %s %s\n' "$host_pattern" "$key_type" "$key_data" >"$temp"
    install_if_changed "$temp" "$KNOWN_HOSTS" 644 >/dev/null
}

# --- 6. the base image -------------------------------------------------------

host_gnu_tar() {
    local candidate version
    for candidate in /usr/bin/tar /bin/tar; do
        version="$("$candidate" --version 2>/dev/null)" || continue
        if [[ "$version" == *"GNU tar"* ]]; then
            readlink -f "$candidate"
            return 0
        fi
    done
    die "GNU tar not found at /usr/bin/tar or /bin/tar"
}

host_busybox() {
    local candidate
    for candidate in /bin/busybox /usr/bin/busybox; do
        [[ -x "$candidate" ]] && { readlink -f "$candidate"; return 0; }
    done
    die "busybox not found; is busybox-static installed?"
}

# Lay out the image's root filesystem in ROOT:
#   /bin/busybox with a symlink in /bin for each of its applets, `tar` too;
#   GNU tar as /usr/bin/gtar, with its shared libraries and dynamic loader
#   copied to the paths ldd reports, so that --format=pax, --numeric-owner,
#   --xattrs and the rest behave as on the host. It is not /bin/tar because
#   Debian's busybox shell runs its own applet for any applet name before it
#   looks at PATH: `sh -c 'tar ...'` would get busybox tar whatever /bin/tar
#   is. `gtar` is GNU tar from a shell and from a plain exec alike;
#   /etc/passwd and /etc/group with root and nobody, /root, /tmp (1777),
#   /workspace, and empty /dev, /proc and /sys for the runtime to mount.
build_rootfs() {
    local root=$1 busybox tar applet library
    busybox="$(host_busybox)"
    tar="$(host_gnu_tar)"

    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,tmp,var/tmp}
    mkdir -p "$root"/{workspace,dev,proc,sys}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 700 "$root/root"

    cp "$busybox" "$root/bin/busybox"
    while read -r applet; do
        [[ -n "$applet" && "$applet" != busybox ]] || continue
        ln -s busybox "$root/bin/$applet"
    done < <("$root/bin/busybox" --list)

    cp "$tar" "$root/usr/bin/gtar"
    while read -r library; do
        mkdir -p "$root$(dirname "$library")"
        cp -L "$library" "$root$library"
    done < <(ldd "$tar" | grep -o '/[^ ]*')

    printf '%s\n' \
        'root:x:0:0:root:/root:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
        >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$root/etc/group"
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' \
        >"$root/etc/nsswitch.conf"
}

# What `docker import` sets in the image's config besides the recipe label.
# Not labelled sandboxer.managed: tests check that nothing with that label
# remains, and this image is meant to stay.
image_config_changes() {
    printf '%s\n' \
        'CMD ["/bin/sh"]' \
        "ENV PATH=$IMAGE_PATH" \
        'LABEL sandboxer.base-image=1'
}

# The recipe is the two functions above and the binaries build_rootfs copies:
# a change to any of them gives a new hash, and the image is rebuilt.
image_recipe_hash() {
    {
        declare -f build_rootfs image_config_changes
        sha256sum "$(host_busybox)" "$(host_gnu_tar)"
    } | sha256sum | cut -c1-16
}

verify_image() {
    local output init
    # With --init, docker runs /usr/bin/docker-init (tini, from the tini
    # package) as PID 1, as compose's `init: true` does.
    for init in --no-init --init; do
        output="$(docker run --rm "${init/--no-init/--init=false}" "$IMAGE" sh -c \
            'tar --version; gtar --version; sha256sum /dev/null; echo ok' 2>&1)" ||
            die "docker run $init $IMAGE failed: $output"
        [[ "$output" == *"GNU tar"* && "$output" == *$'\nok' ]] ||
            die "unexpected output from docker run $init $IMAGE: $output"
    done
}

ensure_image() {
    local recipe current old_id build_dir change
    local import_options=()
    recipe="$(image_recipe_hash)"
    current="$(docker image inspect "$IMAGE" \
        --format '{{index .Config.Labels "sandboxer.recipe"}}' 2>/dev/null)" ||
        current=""
    if [[ "$current" == "$recipe" ]]; then
        return 0
    fi
    old_id="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
    log "building $IMAGE (recipe $recipe)"

    build_dir="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand build_dir now, while it is set
    trap "rm -rf '$build_dir'" EXIT
    build_rootfs "$build_dir/rootfs"
    while read -r change; do
        import_options+=(--change "$change")
    done < <(image_config_changes)
    import_options+=(--change "LABEL sandboxer.recipe=$recipe")
    tar --numeric-owner --owner=0 --group=0 -C "$build_dir/rootfs" -cf - . |
        docker import "${import_options[@]}" - "$IMAGE" >/dev/null
    rm -rf "$build_dir"
    trap - EXIT

    if [[ -n "$old_id" ]]; then
        docker image rm "$old_id" >/dev/null 2>&1 || true
    fi
    verify_image
}

# --- 7. sandboxer's config file ----------------------------------------------

# Adds or replaces only the [hosts.testhost] and [hosts.testhost-nodocker]
# tables, and adds default_host when the file has none; the rest of the file
# is kept byte for byte. The result is parsed before it is written, and must
# equal the original plus our changes, or nothing is written.
ensure_config() {
    local file
    file="$(config_file)"
    mkdir -p "$(dirname "$file")"
    /usr/bin/python3 - "$file" \
        "$(url_for "$DOCKER_USER")" "$(url_for "$NODOCKER_USER")" \
        "$CLIENT_KEY" "$KNOWN_HOSTS" <<'PYTHON'
import json
import os
import re
import sys
import tempfile
import tomllib

path, url, nodocker_url, identity, known_hosts = sys.argv[1:]
ours = {
    "testhost": {"url": url, "identity_file": identity, "known_hosts": known_hosts},
    "testhost-nodocker": {
        "url": nodocker_url, "identity_file": identity, "known_hosts": known_hosts,
    },
}


def is_blank_or_comment(line):
    return not line.strip() or line.lstrip().startswith("#")


def fail(message):
    print(f"testhost: error: {path}: {message}", file=sys.stderr)
    sys.exit(1)


def table_text(name, values):
    lines = [f"[hosts.{name}]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


try:
    with open(path, encoding="utf-8") as handle:
        original = handle.read()
except FileNotFoundError:
    original = ""
try:
    before = tomllib.loads(original)
except tomllib.TOMLDecodeError as error:
    fail(f"not valid TOML ({error}); fix it or move it away")

header = re.compile(r"^\s*\[")
our_header = re.compile(
    r"""^\s*\[\s*hosts\s*\.\s*(?:testhost|"testhost"|testhost-nodocker"""
    r"""|"testhost-nodocker")\s*\]\s*(?:#.*)?$"""
)
lines = original.splitlines(keepends=True)
kept, insert_at, index = [], None, 0
while index < len(lines):
    if not our_header.match(lines[index]):
        kept.append(lines[index])
        index += 1
        continue
    if insert_at is None:
        insert_at = len(kept)
    end = index + 1
    while end < len(lines) and not header.match(lines[end]):
        end += 1
    # Comments and blank lines just above the next table belong to it.
    keep_from = end
    while keep_from > index + 1 and is_blank_or_comment(lines[keep_from - 1]):
        keep_from -= 1
    trailing = lines[keep_from:end]
    while trailing and not trailing[0].strip():
        trailing.pop(0)
    kept.extend(["\n"] + trailing if trailing else [])
    index = end

block = "\n".join(table_text(name, values) for name, values in ours.items())
if insert_at is None:
    text = "".join(kept)
    if text and not text.endswith("\n"):
        text += "\n"
    text += ("\n" if text.strip() else "") + block
else:
    following = kept[insert_at:]
    while following and not following[0].strip():
        following.pop(0)
    separator = ["\n"] if following else []
    text = "".join(kept[:insert_at] + [block] + separator + following)
    # A removed table at the end may leave the blank lines that preceded it.
    text = text.rstrip("\n") + "\n"

if "default_host" not in before:
    # Top-level keys must come before the first table; the leading comments
    # and blank lines of a file are still in the root table.
    head = text.splitlines(keepends=True)
    at = 0
    while at < len(head) and is_blank_or_comment(head[at]):
        at += 1
    line = 'default_host = "testhost"\n'
    rest = head[at:]
    gap = ["\n"] if rest and rest[0].strip() else []
    text = "".join(head[:at] + [line] + gap + rest)

expected = json.loads(json.dumps(before))
expected.setdefault("default_host", "testhost")
expected.setdefault("hosts", {})
if not isinstance(expected["hosts"], dict):
    fail("`hosts` is not a table; fix it or move the file away")
expected["hosts"].update(ours)
try:
    after = tomllib.loads(text)
except tomllib.TOMLDecodeError as error:
    fail(f"could not add the testhost tables ({error}); define them as "
         "[hosts.testhost] and [hosts.testhost-nodocker] tables or remove them")
if after != expected:
    fail("could not add the testhost tables without changing other settings; "
         "define them as [hosts.testhost] and [hosts.testhost-nodocker] tables "
         "or remove them")

if text != original:
    directory = os.path.dirname(path) or "."
    descriptor, temp = tempfile.mkstemp(dir=directory, prefix=".config.toml.")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    if os.path.exists(path):
        os.chmod(temp, os.stat(path).st_mode & 0o7777)
    else:
        os.chmod(temp, 0o644)
    os.replace(temp, path)
    print(f"testhost: registered testhost in {path}", file=sys.stderr)
PYTHON
}

# --- 8. end-to-end check -----------------------------------------------------

remote() {
    local user=$1
    shift
    ssh -F /dev/null -i "$CLIENT_KEY" \
        -o IdentitiesOnly=yes -o IdentityAgent=none \
        -o UserKnownHostsFile="$KNOWN_HOSTS" -o StrictHostKeyChecking=yes \
        -o BatchMode=yes -o ConnectTimeout=10 -o LogLevel=ERROR \
        -p "$PORT" "$user@$ADDRESS" "$@" </dev/null
}

check_end_to_end() {
    local output docker_version compose_version
    # One connection for both checks: each ssh login costs about 0.3 s.
    output="$(remote "$DOCKER_USER" "docker version --format '{{.Server.Version}}' \
        && docker-compose version --short")" ||
        die "docker or docker-compose failed for $DOCKER_USER" \
            "over ssh on $ADDRESS:$PORT"
    { read -r docker_version && read -r compose_version; } <<<"$output"
    remote "$NODOCKER_USER" true ||
        die "$NODOCKER_USER cannot log in over ssh on $ADDRESS:$PORT"
    log "ready: $(url_for "$DOCKER_USER")" \
        "(docker $docker_version, compose $compose_version)"
}

# -----------------------------------------------------------------------------

set_up() {
    [[ "$(id -u)" == 0 ]] || die "run as root"
    [[ "$STATE_DIR" != *[[:space:]]* ]] ||
        die "SANDBOXER_TESTHOST_DIR must not contain spaces"
    [[ "$PORT" =~ ^[0-9]+$ ]] || die "SANDBOXER_TESTHOST_PORT must be a number"

    install -d -m 755 "$STATE_DIR"
    # One run at a time (two CI jobs, or a test fixture racing a developer).
    exec 9>>"$STATE_DIR/lock"
    flock -w 600 9 || die "another run holds $STATE_DIR/lock"

    ensure_packages
    ensure_dockerd
    ensure_key "$HOST_KEY" "sandboxer-testhost host key"
    ensure_key "$CLIENT_KEY" "sandboxer-testhost client key"
    ensure_user "$DOCKER_USER" yes
    ensure_user "$NODOCKER_USER" no
    ensure_sshd
    ensure_known_hosts
    ensure_image
    ensure_config
    check_end_to_end
}

print_env() {
    printf 'export SANDBOXER_TESTHOST_URL=%q\n' "$(url_for "$DOCKER_USER")"
    printf 'export SANDBOXER_TESTHOST_NODOCKER_URL=%q\n' "$(url_for "$NODOCKER_USER")"
    printf 'export SANDBOXER_TESTHOST_IDENTITY=%q\n' "$CLIENT_KEY"
    printf 'export SANDBOXER_TESTHOST_KNOWN_HOSTS=%q\n' "$KNOWN_HOSTS"
}

main() {
    case "${1:-}" in
        "") set_up >&2 ;;
        --print-env)
            set_up >&2
            print_env
            ;;
        --stop) stop_sshd ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" ;;
        *) die "unknown option $1; use --print-env, --stop or --help" ;;
    esac
}

main "$@"
