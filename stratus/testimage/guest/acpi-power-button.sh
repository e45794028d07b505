#!/bin/sh
# Run by busybox acpid when the (virtual) power button is pressed.
echo "STRATUS-TEST-IMAGE POWER OFF" > /dev/console
sync
poweroff -f
