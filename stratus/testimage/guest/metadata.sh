# Sourced by /init (and by the tests, with the host's busybox sh).
# The guest has no JSON parser, so json_flatten (busybox awk) turns a JSON
# document into one "path<TAB>value" line per scalar, e.g.
#   uuid	0b1c...            meta/role	web
#   keys/0/data	ssh-ed25519 AAAA...   networks/0/routes/1/gateway	10.0.0.1
# Strings are unescaped except \n, which stays as the two characters \n so that
# every value fits on one line. null/true/false/numbers are printed as written.

json_flatten() {
    awk '
    BEGIN { RS = "\001"; hex = "0123456789abcdef" }
    function fail(msg) { printf "json: %s at offset %d\n", msg, pos > "/dev/stderr"; exit 1 }
    function skip_ws() { while (pos <= len && index(" \t\r\n", substr(doc, pos, 1))) pos++ }
    function hexval(h,   i, v) {
        v = 0; h = tolower(h)
        for (i = 1; i <= length(h); i++) v = v * 16 + index(hex, substr(h, i, 1)) - 1
        return v
    }
    function parse_string(   out, c, e, code) {
        out = ""; pos++
        while (pos <= len) {
            c = substr(doc, pos, 1)
            if (c == "\"") { pos++; return out }
            if (c == "\\") {
                e = substr(doc, pos + 1, 1); pos += 2
                if (e == "n") out = out "\\n"
                else if (e == "t") out = out "\t"
                else if (e == "r" || e == "b" || e == "f") { }
                else if (e == "u") {
                    code = hexval(substr(doc, pos, 4)); pos += 4
                    out = out (code >= 32 && code < 127 ? sprintf("%c", code) : "?")
                }
                else out = out e
                continue
            }
            out = out c; pos++
        }
        fail("unterminated string")
    }
    function emit(path, value) { print path "\t" value }
    function join(path, key) { return path == "" ? key : path "/" key }
    function parse_value(path,   c, key, n, start) {
        skip_ws(); c = substr(doc, pos, 1)
        if (c == "{") {
            pos++; skip_ws()
            if (substr(doc, pos, 1) == "}") { pos++; return }
            while (1) {
                skip_ws()
                if (substr(doc, pos, 1) != "\"") fail("object key expected")
                key = parse_string(); skip_ws()
                if (substr(doc, pos, 1) != ":") fail("colon expected")
                pos++; parse_value(join(path, key)); skip_ws()
                c = substr(doc, pos, 1); pos++
                if (c == "}") return
                if (c != ",") fail("comma or } expected")
            }
        }
        if (c == "[") {
            pos++; skip_ws(); n = 0
            if (substr(doc, pos, 1) == "]") { pos++; return }
            while (1) {
                parse_value(join(path, n++)); skip_ws()
                c = substr(doc, pos, 1); pos++
                if (c == "]") return
                if (c != ",") fail("comma or ] expected")
            }
        }
        if (c == "\"") { emit(path, parse_string()); return }
        start = pos
        while (pos <= len && !index(",]} \t\r\n", substr(doc, pos, 1))) pos++
        if (pos == start) fail("value expected")
        emit(path, substr(doc, start, pos - start))
    }
    { doc = doc $0 }
    END { len = length(doc); pos = 1; parse_value(""); skip_ws(); if (pos <= len) fail("trailing data") }
    ' "$@"
}

# Value at a flattened path (e.g. "uuid", "meta/role", "links/0/id") of a JSON file.
json_get() {
    json_flatten "$2" | flat_get "$1"
}

# Same, reading already flattened lines on stdin.
flat_get() {
    awk -F '\t' -v want="$1" '$1 == want { sub(/^[^\t]*\t/, ""); print; exit }'
}

# SSH public keys, one per line: the values of public_keys, else keys[].data.
json_public_keys() {
    flat=$(json_flatten "$1")
    keys=$(printf '%s\n' "$flat" | awk -F '\t' '$1 ~ /^public_keys\// { sub(/^[^\t]*\t/, ""); print }')
    if [ -z "$keys" ]; then
        keys=$(printf '%s\n' "$flat" | awk -F '\t' '$1 ~ /^keys\/[0-9]+\/data$/ { sub(/^[^\t]*\t/, ""); print }')
    fi
    # A key text may end in a newline (JSON \n); several keys may share one value.
    printf '%s\n' "$keys" | sed 's/\\n/\n/g' | grep -v '^[[:space:]]*$'
}
