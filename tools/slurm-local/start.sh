#!/usr/bin/env bash
# Start a single-node SLURM cluster with job accounting on this machine, to try the
# workflow's cluster path (profiles/slurm) on a laptop or in CI. Run as root:
#
#   tools/slurm-local/start.sh    # then sinfo, sbatch, squeue, sacct reach this cluster
#   tools/slurm-local/stop.sh     # stops only what this script started
#
# Everything (config, state, logs, pid files, the accounting database) lives under
# $SLURM_LOCAL_DIR (default /tmp/nucleiflow-slurm). The one thing outside it is the link
# /etc/slurm/slurm.conf -> that folder's config, made only where no such file exists: the
# executor plugin's job step drops SLURM_CONF, so the srun inside each job finds the config
# only there. stop.sh removes the link. The script prints `export SLURM_CONF=...` for shells
# that prefer the variable. Running it again while the cluster is up changes nothing.
# Missing Debian packages (slurm-wlm, slurm-client, munge, slurmdbd, mariadb-server) are
# installed with apt-get.
#
# The cluster: one node `localhost` with this machine's CPUs (SLURM_LOCAL_CPUS may advertise
# more, so that more short jobs run side by side), 90 % of its memory and SLURM_LOCAL_GPUS
# (default 2) stand-in GPUs: GRES gpu backed by empty files, so GPU jobs are scheduled as on a
# real cluster and compute on CPU. Partitions `cpu` (default) and `gpu`; account `nucleiflow`
# (enforced: a job under another account is refused); requests no node can satisfy are
# refused by sbatch (EnforcePartLimits=ALL).
# Ports: SLURM_LOCAL_PORT (slurmctld, default 6817), +1 slurmd, +2 slurmdbd.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/nucleiflow-slurm}
PORT=${SLURM_LOCAL_PORT:-6817}
GPUS=${SLURM_LOCAL_GPUS:-2}
CPUS=${SLURM_LOCAL_CPUS:-$(nproc)}
ACCOUNT=nucleiflow
CLUSTER=nucleiflow
PACKAGES=(slurm-wlm slurm-client munge slurmdbd mariadb-server)
NEEDED=(slurmctld slurmd slurmdbd munged mariadbd mariadb-install-db sbatch sacct sacctmgr scontrol)

say() { echo "slurm-local: $*" >&2; }
die() {
    say "$*"
    exit 1
}

[[ $(id -u) == 0 ]] || die "needs root (it starts slurmd, munged and mariadbd as their users)"

missing() {
    local cmd
    for cmd in "${NEEDED[@]}"; do
        PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null || return 0
    done
    return 1
}
if missing; then
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is absent: install ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq "${PACKAGES[@]}" >&2 || die "apt-get install ${PACKAGES[*]} failed"
fi
export PATH=$PATH:/usr/sbin:/sbin

ETC=$DIR/etc RUN=$DIR/run LOG=$DIR/log
export SLURM_CONF=$ETC/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
DB_SOCKET=$DIR/mysql/mysqld.sock

alive() { # alive NAME: the pid in run/NAME.pid is a running NAME
    local pid
    pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1"
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    local until=$((SECONDS + seconds))
    shift 2
    while ((SECONDS < until)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${seconds}s (logs in $LOG)"
}

node_idle() { sinfo -h -n localhost -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }

# Job steps cannot be pointed at this config: the plugin's job step (srun inside each job)
# drops SLURM_CONF from its environment, so it must find the config where SLURM looks by
# default. /etc/slurm/slurm.conf becomes a link to ours, unless that file is someone else's.
if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$ETC/slurm.conf" ]]; then
    :
elif [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
    die "$SYSTEM_CONF exists and is not this cluster's; jobs would read it. Move it away first."
else
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$ETC/slurm.conf" "$SYSTEM_CONF"
fi

if alive munged && alive mariadbd && alive slurmdbd && alive slurmctld && alive slurmd && node_idle; then
    say "already running ($DIR)"
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
fi

mkdir -p "$ETC" "$RUN" "$LOG" "$DIR/state/ctld" "$DIR/state/slurmd" "$DIR/munge" "$DIR/mysql"
chmod 755 "$DIR" "$ETC" "$RUN" "$LOG"

mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

# -- configuration (rewritten only while no daemon of ours runs) ----------------------------
if ! alive slurmctld && ! alive slurmdbd && ! alive slurmd; then
    cat >"$ETC/slurm.conf" <<CONF
# Written by tools/slurm-local/start.sh: a one-node cluster for trying the workflow.
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that asks no memory would take the whole node.
DefMemPerCPU=1024
# sbatch refuses a job that no node of its partition could ever run.
EnforcePartLimits=ALL
ReturnToService=2
# The node may advertise more CPUs than the machine has (SLURM_LOCAL_CPUS).
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=300
GresTypes=gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
# The munge socket for talking to slurmdbd (AuthInfo covers slurmctld and slurmd only).
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
AccountingStorageTRES=gres/gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
CONF
    # Stand-in GPUs: SLURM schedules GPUs only with a device file each; these are empty files,
    # so jobs are scheduled exactly as GPU jobs and compute on CPU.
    mkdir -p "$DIR/fake-gpu"
    for ((i = 0; i < GPUS; i++)); do touch "$DIR/fake-gpu/gpu$i"; done
    echo "NodeName=localhost Name=gpu File=$DIR/fake-gpu/gpu[0-$((GPUS - 1))]" >"$ETC/gres.conf"
    cat >"$ETC/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
CONF
    chmod 600 "$ETC/slurmdbd.conf"
    chmod 644 "$ETC/slurm.conf" "$ETC/gres.conf"
fi

# -- munge: its own key and socket --------------------------------------------------------
if ! alive munged; then
    mkdir -p "$DIR/munge-key"
    chown munge:munge "$DIR/munge" "$DIR/munge-key"
    chmod 755 "$DIR/munge" # the socket's folder: every client needs to reach it
    chmod 700 "$DIR/munge-key"
    if [[ ! -s $DIR/munge-key/munge.key ]]; then
        runuser -u munge -- mungekey --create --keyfile="$DIR/munge-key/munge.key" >&2
    fi
    rm -f "$MUNGE_SOCKET" "$RUN/munged.pid"
    touch "$RUN/munged.pid" "$LOG/munged.log"
    chown munge:munge "$RUN/munged.pid" "$LOG/munged.log"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$DIR/munge-key/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" --seed-file="$DIR/munge-key/munged.seed" \
        </dev/null >>"$LOG/munged.log" 2>&1 || die "munged failed to start (see $LOG/munged.log)"
    wait_for 10 munged munge --socket="$MUNGE_SOCKET" -n
fi

# -- MariaDB for slurmdbd: no network, its own socket and data folder ----------------------
export MYSQL_UNIX_PORT=$DB_SOCKET # read by the client library inside slurmdbd
if ! alive mariadbd; then
    chown mysql:mysql "$DIR/mysql"
    if [[ ! -d $DIR/mysql/data/mysql ]]; then
        mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql/data" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
    fi
    rm -f "$DB_SOCKET"
    mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql/data" --socket="$DB_SOCKET" \
        --skip-networking --log-error="$LOG/mariadb.log" --pid-file="$DIR/mysql/mariadbd.pid" \
        </dev/null >>"$LOG/mariadb.log" 2>&1 &
    echo $! >"$RUN/mariadbd.pid"
    wait_for 30 mariadbd mariadb-admin --no-defaults --socket="$DB_SOCKET" ping
fi

# -- slurmdbd, slurmctld, slurmd ----------------------------------------------------------
if ! alive slurmdbd; then
    slurmdbd </dev/null >>"$LOG/slurmdbd.log" 2>&1
    wait_for 30 slurmdbd sacctmgr -n list cluster
fi
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >&2
fi
if ! alive slurmctld; then
    slurmctld </dev/null >>"$LOG/slurmctld.log" 2>&1
    wait_for 30 slurmctld scontrol ping
fi
if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="nucleiflow local cluster" >&2
fi
if ! sacctmgr -n -P list assoc user=root format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >&2
fi
if ! alive slurmd; then
    slurmd -N localhost </dev/null >>"$LOG/slurmd.log" 2>&1
fi
wait_for 30 "node localhost" node_idle
say "up: node localhost ($CPUS CPUs, $mem_mb MB, $GPUS stand-in GPUs), partitions cpu and gpu, account $ACCOUNT"
echo "export SLURM_CONF=$SLURM_CONF"
