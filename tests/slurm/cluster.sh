#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for tests/test_slurm.py (root, no systemd).
#   bash tests/slurm/cluster.sh up     # munge, MariaDB, slurmdbd, slurmctld, slurmd; 2 fake GPUs
#   bash tests/slurm/cluster.sh down   # stop every daemon it started
# Facts behind the settings: ../shared/notes/slurm.md. Needs Debian's slurmctld slurmd slurm-client
# slurmdbd munge mariadb-server (make system-deps installs them).
set -euo pipefail
HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(free -m | awk '/^Mem:/{print $2}') * 8 / 10 ))
LOG=/var/log/xtflow-slurm
DBPASS=xtflow-test

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq "$t"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "cluster.sh: $what did not come up in $t s" >&2; tail -n 20 "$LOG"/*.log >&2 || true; exit 1
}

down() {
  scancel --user=root >/dev/null 2>&1 || true
  for d in slurmd slurmctld slurmdbd; do pkill -x "$d" 2>/dev/null || true; done
  mysqladmin shutdown >/dev/null 2>&1 || pkill -x mariadbd 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  for _ in $(seq 20); do pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x slurmdbd >/dev/null || pgrep -x mariadbd >/dev/null || break; sleep 0.5; done
  rm -f /run/slurmctld.pid /run/slurmd.pid /run/slurmdbd.pid
}

up() {
  down
  mkdir -p "$LOG" /etc/slurm /var/spool/slurmctld /var/spool/slurmd /run/munge /var/lib/munge /var/log/munge
  # munge: shared key, daemon as the munge user
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
  # MariaDB for slurmdbd (the executor plugin's default status path is sacct)
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG/mariadb-install.log" 2>&1
  (mariadbd --user=mysql --datadir=/var/lib/mysql >"$LOG/mariadb.log" 2>&1 &)
  wait_for 60 MariaDB mysqladmin ping
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  # two fake GPUs: character devices that gres.conf can point at
  for i in 0 1; do [ -e /dev/xtflow-fakegpu$i ] || mknod /dev/xtflow-fakegpu$i c 195 $((200 + i)); done
  cat > /etc/slurm/gres.conf <<CONF
NodeName=$HOST Name=gpu File=/dev/xtflow-fakegpu[0-1]
CONF
  cat > /etc/slurm/slurm.conf <<CONF
ClusterName=xtflow
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
MinJobAge=300
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
  slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster xtflow >/dev/null 2>&1 || true
  slurmctld
  slurmd
  wait_for 60 "an idle node" sh -c "sinfo -h -o %T | grep -q idle"
  echo "cluster.sh: up ($HOST, $CPUS CPUs, $MEM MB, 2 fake GPUs)"
}

case "${1:-}" in
  up) up ;;
  down) down; echo "cluster.sh: down" ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
