#!/bin/sh
# Runs once in the sandbox pod before anything else (NET_ADMIN, as root): only the proxy's
# user (uid 10001) may open connections that leave the pod; every other process, the
# candidate's workload included, reaches loopback only.
set -eu
PROXY_UID="${PROXY_UID:-10001}"
for tables in iptables ip6tables; do
  "$tables" -A OUTPUT -o lo -j ACCEPT
  "$tables" -A OUTPUT -m owner --uid-owner "$PROXY_UID" -j ACCEPT
  "$tables" -A OUTPUT -j REJECT
done
