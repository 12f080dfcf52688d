#!/bin/sh
# fleetgate-routes-check.sh: the route-manifest checks of an application's CI, for any
# CI system. Run it from the root of the application's repository, after a step that
# exports the application's routes (see docs/drift.md, "How an application exports its
# routes").
#
#   1. drift: `fleetgate routes drift` compares the manifest with the exported routes
#      and the reviewed lock file; the findings are printed and written as a JUnit
#      report for the CI's test view.
#   2. diff (when a base is given): `fleetgate routes diff` classifies the same routes
#      under the base branch's manifest and this change's manifest, prints the result
#      and writes it as Markdown, ready to post as a pull request comment.
#
# Settings (environment variables):
#
#   FLEETGATE        how to run fleetgate (default: fleetgate). A command line, split on
#                    spaces, e.g. "docker run --rm -v $PWD:$PWD -w $PWD IMAGE" for
#                    the container image, whose entrypoint is fleetgate.
#   ROUTES_DIR       the manifest directory (default: routes)
#   APP_ROUTES       the exported routes (default: ROUTES_DIR/app-routes.txt): METHOD
#                    /path lines, or an OpenAPI 3 document (JSON or YAML)
#   LOCK             the lock file (default: fleetgate's, ROUTES_DIR/app-routes.lock)
#   BASE_REF         a git revision to diff against, e.g. origin/main (its
#                    ROUTES_DIR is extracted with git archive; needs the history)
#   BASE_ROUTES_DIR  or: the base manifest directory, already checked out
#   ALLOW_TO_FLEET   1: a route moving from ide-only to fleet-ok does not fail the run
#                    (a reviewer has approved it); the report still shows it
#   OUT_DIR          where the reports go (default: fleetgate-reports):
#                    drift.xml (JUnit), drift.txt, routes-diff.md, routes-diff.txt
#
# Exit codes:
#
#   0   no drift findings, and no route moves from ide-only to fleet-ok
#   1   drift findings (stale, partial, unreviewed or changed routes), or a route
#       moves from ide-only to fleet-ok without ALLOW_TO_FLEET=1
#   2   usage: a setting is wrong, BASE_REF is not a revision
#   78  a manifest does not load, or the exported routes or the lock are unreadable
#       or malformed (the messages name file and line)
#   other: fleetgate's own exit code (e.g. 127 when it is not installed)
#
# Both checks always run, so that one CI run shows everything; the worst outcome
# decides the exit code (a configuration error over findings).
set -eu

FLEETGATE=${FLEETGATE:-fleetgate}
ROUTES_DIR=${ROUTES_DIR:-routes}
APP_ROUTES=${APP_ROUTES:-$ROUTES_DIR/app-routes.txt}
LOCK=${LOCK:-}
BASE_REF=${BASE_REF:-}
BASE_ROUTES_DIR=${BASE_ROUTES_DIR:-}
ALLOW_TO_FLEET=${ALLOW_TO_FLEET:-0}
OUT_DIR=${OUT_DIR:-fleetgate-reports}

say() { printf '%s\n' "fleetgate-routes-check: $*" >&2; }

# Run fleetgate; FLEETGATE is a command line, split on spaces on purpose.
fleetgate() {
    # shellcheck disable=SC2086
    $FLEETGATE "$@"
}

if [ -n "$BASE_REF" ] && [ -n "$BASE_ROUTES_DIR" ]; then
    say "set BASE_REF or BASE_ROUTES_DIR, not both"
    exit 2
fi
if [ ! -f "$APP_ROUTES" ]; then
    say "$APP_ROUTES: the exported application routes are missing (set APP_ROUTES, or export them first)"
    exit 78
fi
mkdir -p "$OUT_DIR"

# The worst exit code seen: configuration errors (and anything else) over findings.
status=0
record() {
    if [ "$1" -eq 0 ]; then
        return
    fi
    if [ "$1" -eq 1 ]; then
        if [ "$status" -eq 0 ]; then
            status=1
        fi
    elif [ "$status" -le 1 ]; then
        status=$1
    fi
}

# --- 1. drift ------------------------------------------------------------------------
set -- --routes "$ROUTES_DIR" --app-routes "$APP_ROUTES"
if [ -n "$LOCK" ]; then
    set -- "$@" --lock "$LOCK"
fi
rc=0
fleetgate routes drift "$@" --format junit >"$OUT_DIR/drift.xml" || rc=$?
if [ "$rc" -le 1 ]; then
    # The same findings for the log (stderr notes included).
    fleetgate routes drift "$@" >"$OUT_DIR/drift.txt" || true
    cat "$OUT_DIR/drift.txt"
fi
record "$rc"
if [ "$rc" -eq 1 ]; then
    say "drift findings: fix the manifest, or review the classes and run 'fleetgate routes drift --update' (see docs/drift.md)"
fi

# --- 2. diff against the base ----------------------------------------------------------
if [ -n "$BASE_REF" ]; then
    if ! git rev-parse --verify --quiet "$BASE_REF^{commit}" >/dev/null; then
        say "BASE_REF=$BASE_REF is not a git revision here (fetch the base branch, or a deeper history)"
        exit 2
    fi
    # Under OUT_DIR, not /tmp: a fleetgate in a container sees the working directory.
    base_tmp=$OUT_DIR/base
    rm -rf "$base_tmp"
    mkdir -p "$base_tmp"
    trap 'rm -rf "$base_tmp"' EXIT
    trap 'exit 130' INT TERM
    if git cat-file -e "$BASE_REF:$ROUTES_DIR" 2>/dev/null; then
        git archive "$BASE_REF" "$ROUTES_DIR" | tar -x -C "$base_tmp"
        BASE_ROUTES_DIR=$base_tmp/$ROUTES_DIR
    else
        say "$BASE_REF has no $ROUTES_DIR: no manifest to diff against (is this the change that adds it?)"
    fi
fi

if [ -n "$BASE_ROUTES_DIR" ]; then
    rc=0
    fleetgate routes diff --app-routes "$APP_ROUTES" --format markdown \
        "$BASE_ROUTES_DIR" "$ROUTES_DIR" >"$OUT_DIR/routes-diff.md" || rc=$?
    if [ "$rc" -le 1 ]; then
        fleetgate routes diff --app-routes "$APP_ROUTES" \
            "$BASE_ROUTES_DIR" "$ROUTES_DIR" >"$OUT_DIR/routes-diff.txt" || true
        cat "$OUT_DIR/routes-diff.txt"
    fi
    if [ "$rc" -eq 1 ]; then
        if [ "$ALLOW_TO_FLEET" = 1 ]; then
            say "routes move from ide-only to fleet-ok; allowed by ALLOW_TO_FLEET=1"
            rc=0
        else
            say "routes move from ide-only to fleet-ok: what they write may be lost on a stateless replica; have it reviewed, then rerun with ALLOW_TO_FLEET=1"
        fi
    fi
    record "$rc"
fi

exit "$status"
