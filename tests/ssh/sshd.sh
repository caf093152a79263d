#!/usr/bin/env bash
# A real sshd on 127.0.0.1 for the SSH plugin's tests (reference/plugins.md §6.1).
#   tests/ssh/sshd.sh start DIR   set up (once per machine: packages, users, sudoers, the dzdo
#                                 stub), start sshd on a free port, write DIR/env
#   tests/ssh/sshd.sh rekey DIR   a new host key, same port (for "changed host key")
#   tests/ssh/sshd.sh hostcert DIR [VALIDITY [PRINCIPALS [CA]]]
#                                 sign the host key again (ssh-keygen -V and -n; default: forever,
#                                 127.0.0.1,localhost) with DIR/CA (host_ca, host_ca_rsa or
#                                 host_ca_ecdsa) and restart sshd
#   tests/ssh/sshd.sh stop DIR    kill sshd by its pid file, remove DIR
# Needs root (sshd with PAM, users, sudo).  Leaves behind: users rexuser, effuser and rexnoacl,
# /var/lib/rex-tests-noacl,
# /etc/sudoers.d/rex-tests, /usr/local/bin/dzdo, /usr/local/sbin/rex-dzdo-exec and
# /etc/rex-tests-dzdo-password.
set -euo pipefail

packages=(openssh-server openssh-client sshpass acl sudo)

install_packages() {
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -q '^installed$' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    # the package's own sshd (port 22) must not start: policy-rc.d says no
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
}

ensure_user() {
    id "$1" >/dev/null 2>&1 || useradd -m -s /bin/sh "$1"
    echo "$1:$2" | chpasswd
}

# dzdo is not in Debian: a stub that prompts like it, checks the password, then sudo -n (§6.1)
install_dzdo() {
    echo rexpass >/etc/rex-tests-dzdo-password
    chmod 600 /etc/rex-tests-dzdo-password
    cat >/usr/local/bin/dzdo <<'STUB'
#!/bin/sh
# test stub of Centrify's dzdo: dzdo -u USER COMMAND...
# like the real one, it talks to the terminal, not to stdin (the wrapper gives it /dev/null)
printf '[dzdo] password for %s: ' "$(id -un)" >/dev/tty
stty -echo </dev/tty 2>/dev/null || true
read -r pw </dev/tty
stty echo </dev/tty 2>/dev/null || true
echo >/dev/tty
if [ "$pw" != "$(sudo -n /bin/cat /etc/rex-tests-dzdo-password)" ]; then
    echo 'Sorry, try again.'
    exit 1
fi
shift
user=$1
shift
exec sudo -n /usr/local/sbin/rex-dzdo-exec "$user" "$@"
STUB
    chmod 755 /usr/local/bin/dzdo
    # what the stub may run without a password: only this, so that plain sudo still prompts
    cat >/usr/local/sbin/rex-dzdo-exec <<'EXEC'
#!/bin/sh
user=$1
shift
exec runuser -u "$user" -- "$@"
EXEC
    chmod 755 /usr/local/sbin/rex-dzdo-exec
}

install_sudoers() {
    cat >/etc/sudoers.d/rex-tests <<'RULES'
rexuser ALL=(ALL) ALL
rexuser ALL=(root) NOPASSWD: /bin/cat /etc/rex-tests-dzdo-password, /usr/local/sbin/rex-dzdo-exec
RULES
    chmod 440 /etc/sudoers.d/rex-tests
    visudo -cf /etc/sudoers.d/rex-tests >/dev/null
}

free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
    done
    echo "sshd.sh: no free port" >&2
    exit 1
}

wait_listening() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "sshd.sh: sshd does not listen on port $1 (log: $2)" >&2
    exit 1
}

start_sshd() {
    local dir=$1 port
    port=$(cat "$dir/port")
    cat >"$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/hostkey
HostCertificate $dir/hostkey-cert.pub
PidFile $dir/sshd.pid
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
TrustedUserCAKeys $dir/user_ca.pub
UsePAM yes
MaxStartups 1000:30:1000
MaxSessions 1000
MaxAuthTries 10
PermitUserEnvironment PATH
LogLevel VERBOSE
CONF
    mkdir -p /run/sshd
    /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
    wait_listening "$port" "$dir/sshd.log"
}

# rexnoacl: a user whose PATH has the usual tools but no setfacl (a host without the acl
# package), through ~/.ssh/environment (sshd: PermitUserEnvironment PATH)
install_noacl_user() {
    local bin=/var/lib/rex-tests-noacl t
    ensure_user rexnoacl rexnoaclpass
    mkdir -p "$bin"
    for t in sh true false [ test mkdir base64 tee chmod rm mv cat id wc sleep echo kill unshare sudo su env; do
        ln -sf "$(type -P "$t")" "$bin/$t"
    done
    install -d -m700 -o rexnoacl -g rexnoacl /home/rexnoacl/.ssh
    echo "PATH=$bin" >/home/rexnoacl/.ssh/environment
    chown rexnoacl:rexnoacl /home/rexnoacl/.ssh/environment
}

# Each environment adds its key with its own marker and takes only that away again: tests
# running at the same time keep each other's keys.  Callers hold the lock.
edit_authorized_keys() {
    local marker=$1 add=$2 user keys
    for user in rexuser rexnoacl; do
        keys=/home/$user/.ssh/authorized_keys
        install -d -m700 -o "$user" -g "$user" "/home/$user/.ssh"
        touch "$keys"
        {
            grep -v -F " rex-tests:$marker" "$keys" || true
            [ -z "$add" ] || sed "s|\$| rex-tests:$marker|" "$add"
        } >"$keys.new"
        mv "$keys.new" "$keys"
        chown "$user:$user" "$keys"
        chmod 600 "$keys"
    done
}

# One setup at a time: useradd, sudoers and authorized_keys are shared by parallel tests.
locked() {
    exec 9>/run/rex-tests.lock
    flock 9
    "$@"
    flock -u 9
}

machine_setup() {
    install_packages
    ensure_user rexuser rexpass
    ensure_user effuser effpass
    install_sudoers
    install_dzdo
    install_noacl_user
}

start() {
    local dir=$1 noexec_port
    [ "$(id -u)" -eq 0 ] || { echo "sshd.sh: run as root" >&2; exit 1; }
    locked machine_setup
    mkdir -p "$dir"
    chmod 755 "$dir"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/hostkey" <<<y >/dev/null
    ssh-keygen -q -t rsa -b 2048 -N '' -f "$dir/id_rsa_foreman_proxy" <<<y >/dev/null
    cp "$dir/id_rsa_foreman_proxy" "$dir/id_rsa_encrypted"
    ssh-keygen -q -p -N keypass -f "$dir/id_rsa_encrypted" >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$dir/user_ca" <<<y >/dev/null
    # host certificates (:ssh_ca_known_hosts_file:): the CA, and one the host does not use
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_ca" <<<y >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$dir/other_ca" <<<y >/dev/null
    ssh-keygen -q -t rsa -b 2048 -N '' -f "$dir/host_ca_rsa" <<<y >/dev/null
    ssh-keygen -q -t ecdsa -b 384 -N '' -f "$dir/host_ca_ecdsa" <<<y >/dev/null
    sign_host_key "$dir" always:forever 127.0.0.1,localhost
    # a key that only its certificate (signed by the user CA sshd trusts) lets in
    ssh-keygen -q -t ed25519 -N '' -f "$dir/id_cert" <<<y >/dev/null
    ssh-keygen -q -s "$dir/user_ca" -I rex-tests -n rexuser "$dir/id_cert.pub" >/dev/null 2>&1
    locked edit_authorized_keys "$dir" "$dir/id_rsa_foreman_proxy.pub"
    free_port >"$dir/port"
    start_sshd "$dir"
    noexec_port=$(start_noexec_sshd "$dir")
    cat >"$dir/env" <<ENV
export SSH_ENV_DIR=$dir
export SSH_HOST=127.0.0.1
export SSH_PORT=$(cat "$dir/port")
export UNREACHABLE_PORT=$(free_port)
export NOEXEC_SSH_PORT=$noexec_port
export SSH_USER=rexuser
export SSH_PASSWORD=rexpass
export EFFECTIVE_USER=effuser
export EFFECTIVE_USER_PASSWORD=effpass
export SSH_KEY=$dir/id_rsa_foreman_proxy
export SSH_KEY_ENCRYPTED=$dir/id_rsa_encrypted
export SSH_KEY_PASSPHRASE=keypass
export SSH_CERT_KEY=$dir/id_cert
export HOST_CA_PUB=$dir/host_ca.pub
export OTHER_CA_PUB=$dir/other_ca.pub
export HOST_CA_RSA_PUB=$dir/host_ca_rsa.pub
export HOST_CA_ECDSA_PUB=$dir/host_ca_ecdsa.pub
export NOACL_USER=rexnoacl
ENV
    echo "$dir/env"
}

# A second sshd whose /var/tmp is mounted noexec (the preflight's case), in a mount namespace
# of its own; where namespaces are not allowed, NOEXEC_SSH_PORT stays empty.
start_noexec_sshd() {
    local dir=$1 port
    port=$(free_port)
    sed "s/^Port .*/Port $port/; s|^PidFile .*|PidFile $dir/sshd-noexec.pid|" \
        "$dir/sshd_config" >"$dir/sshd_noexec_config"
    unshare -m sh -c "mount --make-rprivate / && mount -t tmpfs -o noexec tmpfs /var/tmp &&
        exec /usr/sbin/sshd -D -f $dir/sshd_noexec_config -E $dir/sshd-noexec.log" \
        >/dev/null 2>&1 &
    echo $! >"$dir/sshd-noexec.keep"
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
        kill -0 "$(cat "$dir/sshd-noexec.keep")" 2>/dev/null || break
        sleep 0.05
    done
    echo ""
}

stop() {
    local dir=$1
    [ -f "$dir/sshd.pid" ] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
    [ -f "$dir/sshd-noexec.keep" ] && kill "$(cat "$dir/sshd-noexec.keep")" 2>/dev/null || true
    id rexuser >/dev/null 2>&1 && locked edit_authorized_keys "$dir" ""
    rm -rf "$dir"
}

sign_host_key() {
    ssh-keygen -q -s "$1/${4:-host_ca}" -I rex-tests-host -h -V "$2" -n "$3" "$1/hostkey.pub" >/dev/null 2>&1
}

restart_sshd() {
    local dir=$1
    kill "$(cat "$dir/sshd.pid")"
    rm -f "$dir/sshd.pid"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$(cat "$dir/port")") 2>/dev/null || break
        sleep 0.05
    done
    start_sshd "$dir"
}

hostcert() {
    sign_host_key "$1" "${2:-always:forever}" "${3:-127.0.0.1,localhost}" "${4:-host_ca}"
    restart_sshd "$1"
}

rekey() {
    local dir=$1
    ssh-keygen -q -t ed25519 -N '' -f "$dir/hostkey" <<<y >/dev/null
    sign_host_key "$dir" always:forever 127.0.0.1,localhost
    restart_sshd "$dir"
}

usage="usage: $0 start|stop|rekey DIR, or $0 hostcert DIR [VALIDITY [PRINCIPALS [CA]]]"
case "${1:-}" in
    start | stop | rekey) [ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }; "$1" "$2" ;;
    hostcert) [ $# -ge 2 ] && [ $# -le 5 ] || { echo "$usage" >&2; exit 2; }; shift; hostcert "$@" ;;
    *) echo "$usage" >&2; exit 2 ;;
esac
