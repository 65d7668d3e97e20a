#!/bin/busybox sh
# /init of the test guest (see src/image.rs): mount the pseudo file
# systems, load the virtio modules, name each disk by its serial under
# /dev/disk/, run the script stored raw on the disk with serial
# "gt-script", print its exit code, power off. Markers on the console:
# "GT-BEGIN" before the script, "GT-EXIT <code>" after it.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox mount -t tmpfs tmp /tmp
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
for m in $(cat /etc/modules.order); do
    [ -d "/sys/module/$m" ] || insmod "/lib/modules/$m.ko" || echo "GT-WARN insmod $m failed"
done
# virtio probing is asynchronous: wait (10 s at most) for the script disk.
script=
i=0
while [ -z "$script" ] && [ $i -lt 100 ]; do
    for d in /sys/block/vd*; do
        [ "$(cat "$d/serial" 2>/dev/null)" = gt-script ] && script=/dev/${d##*/}
    done
    [ -n "$script" ] || { sleep 0.1; i=$((i + 1)); }
done
mkdir -p /dev/disk
for d in /sys/block/vd*; do
    s=$(cat "$d/serial" 2>/dev/null)
    [ -n "$s" ] && ln -sf "/dev/${d##*/}" "/dev/disk/$s"
done
echo "GT-BEGIN $(uname -r) disks: $(ls /dev/disk | tr '\n' ' ')"
if [ -n "$script" ]; then
    tr -d '\000' < "$script" > /tmp/test.sh
    sh /tmp/test.sh
    rc=$?
else
    echo "GT-WARN no script disk; block devices: $(ls /sys/block | tr '\n' ' ')"
    rc=127
fi
echo "GT-EXIT $rc"
sync
poweroff -f
