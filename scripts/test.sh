#!/usr/bin/env bash
# Run the whole test suite the way CI does: inside a private D-Bus session with an unlocked
# gnome-keyring (a real Secret Service for the keyring tests). The S3 tests start their own
# SeaweedFS server (tests/s3server.py). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PQSELFENC_IN_DBUS:-}" ]; then
    export PQSELFENC_IN_DBUS=1
    exec dbus-run-session -- bash "$0" "$@"
fi

# A throwaway HOME so the keyring daemon never touches the user's real keyrings.
if [ -z "${PQSELFENC_TEST_HOME:-}" ]; then
    PQSELFENC_TEST_HOME="$(mktemp -d)"
    export PQSELFENC_TEST_HOME
    trap 'rm -rf "$PQSELFENC_TEST_HOME"' EXIT
fi
export HOME="$PQSELFENC_TEST_HOME" XDG_DATA_HOME="$PQSELFENC_TEST_HOME/.local/share"
mkdir -p "$XDG_DATA_HOME/keyrings"
export PYTHON_KEYRING_BACKEND=keyring.backends.SecretService.Keyring

# --unlock reads the password on stdin and exits 0 even when it fails, so probe afterwards.
eval "$(printf %s 'pqselfenc-test' | gnome-keyring-daemon --unlock --components=secrets)"
export GNOME_KEYRING_CONTROL
probe() {
    python3 -c '
import keyring, sys
try:
    keyring.set_password("pqselfenc-probe", "probe", "ok")
    ok = keyring.get_password("pqselfenc-probe", "probe") == "ok"
    keyring.delete_password("pqselfenc-probe", "probe")
except Exception as exc:
    print(f"probe: {type(exc).__name__}: {exc}", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
'
}
# The daemon creates the login collection asynchronously after --unlock: retry briefly.
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    if probe 2>/tmp/pqselfenc-probe.$$; then
        export PQSELFENC_SECRET_SERVICE=1
        echo "scripts/test.sh: Secret Service is up (gnome-keyring, attempt $attempt)"
        break
    fi
    if [ "$attempt" = 10 ]; then
        cat /tmp/pqselfenc-probe.$$ >&2
        echo "scripts/test.sh: Secret Service probe failed" >&2
        exit 1
    fi
    sleep 0.5
done
rm -f /tmp/pqselfenc-probe.$$

exec python3 -m pytest "$@"
