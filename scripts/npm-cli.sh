# Sourced by install-{claude,codex,gemini}.sh: install one npm CLI version into
# <repo>/.tools/<name>-<version>/ unless it is already there, and print its binary's path.
# Needs only the npm registry (each package's native binary is an optional npm dependency).

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# installed_version BIN FIELD: the FIELD-th word of the first line of `BIN --version`.
installed_version() {
    "$1" --version 2>/dev/null | awk -v f="$2" 'NR == 1 {print $f}' || true
}

# install_npm_cli NAME PACKAGE VERSION BIN_NAME VERSION_FIELD [POSTINSTALL_DIR]
# POSTINSTALL_DIR (under node_modules): where to run `node install.cjs` when npm skipped the
# package's install script (ignore-scripts), as Claude Code needs.
install_npm_cli() {
    local name="$1" package="$2" version="$3" bin_name="$4" field="$5" postinstall="${6:-}"
    local prefix="$REPO/.tools/$name-$version"
    local bin="$prefix/node_modules/.bin/$bin_name"
    if [ -x "$bin" ] && [ "$(installed_version "$bin" "$field")" = "$version" ]; then
        echo "$bin"
        return 0
    fi
    command -v npm >/dev/null || { echo "install-$name: npm not found on PATH" >&2; exit 1; }
    command -v node >/dev/null || { echo "install-$name: node not found on PATH" >&2; exit 1; }
    grep -qxF '.tools/' "$REPO/.gitignore" 2>/dev/null || echo '.tools/' >> "$REPO/.gitignore"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error \
        "$package@$version" >&2
    if [ -n "$postinstall" ] && [ "$(installed_version "$bin" "$field")" != "$version" ]; then
        (cd "$prefix/node_modules/$postinstall" && node install.cjs) >&2
    fi
    local got
    got="$(installed_version "$bin" "$field")"
    if [ "$got" != "$version" ]; then
        echo "install-$name: $bin reports '${got:-nothing}', expected $version" >&2
        exit 1
    fi
    echo "$bin"
}
