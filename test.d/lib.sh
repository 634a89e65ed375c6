# Shared helpers for the suites in test.d/ (sourced, not run).

# skip_or_fail MESSAGE: a suite that cannot run. Under CI=true that fails the run;
# elsewhere it says so and the suite ends successfully.
skip_or_fail() {
    if [ "${CI:-}" = true ]; then
        echo "FAIL (CI=true): $1" >&2
        exit 1
    fi
    echo "SKIPPED: $1" >&2
    exit 0
}
