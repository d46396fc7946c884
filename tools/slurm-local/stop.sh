#!/usr/bin/env bash
# Stop the cluster tools/slurm-local/start.sh started: its jobs first, then each daemon by the
# pid file start.sh wrote (never by name). Config, state and the accounting database stay in
# $SLURM_LOCAL_DIR for the next start; delete that folder to start afresh.
set -uo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/nucleiflow-slurm}
RUN=$DIR/run
export SLURM_CONF=$DIR/etc/slurm.conf PATH=$PATH:/usr/sbin:/sbin

pid_of() { # pid_of NAME: the pid in run/NAME.pid if that process is still a NAME
    local pid
    pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
    [[ -n $pid && -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1" && echo "$pid"
}

if pid_of slurmctld >/dev/null && [[ -f $SLURM_CONF ]]; then
    timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null
    for _ in $(seq 50); do
        [[ -z $(timeout 10 squeue -h -t R,CG -o %i 2>/dev/null) ]] && break
        sleep 0.2
    done
fi

for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pid=$(pid_of "$name") || {
        rm -f "$RUN/$name.pid"
        continue
    }
    kill -TERM "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "slurm-local: $name ($pid) ignored SIGTERM for 10 s; killing it" >&2
        kill -KILL "$pid"
    fi
    rm -f "$RUN/$name.pid"
    echo "slurm-local: stopped $name ($pid)" >&2
done

# The link start.sh made, and only that.
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$SLURM_CONF" ]]; then
    rm -f /etc/slurm/slurm.conf
fi
