# Shared by bench/run and bench/profile: tools, key material, configs, process
# control. Sourced, not run. Everything started through `start` is stopped by
# `cleanup` (installed as the EXIT trap by the caller), even on failure.

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(dirname "$BENCH")
PY="$BENCH/.venv/bin/python"
NPROC=$(nproc)
if [ "$NPROC" -ge 2 ]; then PROXY_CPU=${BENCH_PROXY_CPU:-0}; LOAD_CPU=${BENCH_LOAD_CPU:-1}
else PROXY_CPU=0; LOAD_CPU=0; fi
# The upstream shares the load generator's core, so the proxy under test has a
# core to itself; every proxy pays the same upstream.
UP_CPU=${BENCH_UPSTREAM_CPU:-$LOAD_CPU}
# Others compile on this machine: a slightly higher priority keeps their builds
# from landing in the middle of a measurement (only root may lower niceness).
if [ "$(id -u)" = 0 ]; then NICE=${BENCH_NICE:--5}; else NICE=${BENCH_NICE:-0}; fi
# File descriptors: as many as the hard limit allows (20,000 in the sandbox this was
# written in, where root may not raise it); HAProxy needs two per connection.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
HAP_MAXCONN=$(( (NOFILE - 200) / 2 ))
ISS=https://idp.bench.local
AUD=orders-api
PIDS=()

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

install_tools() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v openssl >/dev/null || need+=(openssl)
  command -v curl >/dev/null || need+=(curl)
  command -v taskset >/dev/null || need+=(util-linux)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    [ "$(id -u)" = 0 ] || die "need root to apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null \
      || die "apt-get install ${need[*]} failed"
  fi
  # Debian enables and starts the packaged services on install; they are not ours
  # to stop, and they listen on their own ports (80), not on ours.
  export PATH="$PATH:/usr/sbin:/sbin"
  if [ ! -x "$PY" ] || ! "$PY" -c 'import cryptography' 2>/dev/null; then
    log "creating bench/.venv (cryptography)"
    python3 -m venv "$BENCH/.venv" || die "python3 -m venv failed"
    "$BENCH/.venv/bin/pip" install -q --disable-pip-version-check cryptography \
      || die "pip install cryptography failed"
  fi
}

# The binary under test: $PORTCULLIS_BIN, else a release build of this checkout.
# Beside it BARE, bench/bare-hyper (the framework floor), from this checkout; one
# cargo invocation builds both, so their shared dependencies compile once.
build_portcullis() {
  BARE="$ROOT/target/release/bare-hyper"
  if [ -n "${PORTCULLIS_BIN:-}" ]; then
    BIN=$PORTCULLIS_BIN
    if [ ! -x "$BARE" ]; then
      log "cargo build --release -p bench-bare-hyper"
      (cd "$ROOT" && cargo build --release -q -p bench-bare-hyper) || die "bare-hyper build failed"
    fi
  else
    log "cargo build --release -p portcullis -p bench-bare-hyper"
    (cd "$ROOT" && cargo build --release -q -p portcullis -p bench-bare-hyper) || die "release build failed"
    BIN="$ROOT/target/release/portcullis"
  fi
  [ -x "$BIN" ] || die "no portcullis binary at $BIN"
  [ -x "$BARE" ] || die "no bare-hyper binary at $BARE"
  if [ -n "${PORTCULLIS_REV:-}" ]; then REV=$PORTCULLIS_REV
  else
    REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -z "${PORTCULLIS_BIN:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ]; then
      REV="$REV+dirty"
    fi
  fi
}

free_ports() {
  python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# Direct children of a process (nginx workers), by parent pid.
children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d " " || true; }

# Summed user+system CPU ticks of a process, its threads and its children.
cpu_ticks() {
  local total=0 p s
  for p in "$1" $(children "$1"); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    # after the comm: state(1) ppid(2) ... utime(12) stime(13)
    set -- $s
    total=$(( total + ${12} + ${13} ))
  done
  echo "$total"
}

rss_kib() { # PID -> VmRSS of it and its children (KiB)
  local total=0 p v
  for p in "$1" $(children "$1"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}

# start NAME CPU CMD...: runs CMD in the background pinned to CPU; its pid in PID_NAME.
start() {
  local name=$1 cpu=$2; shift 2
  taskset -c "$cpu" nice -n "$NICE" "$@" >>"$WORK/logs/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "PID_$name" '%s' "$pid"
}

# stop PID: TERM, then KILL after 5 s; its children too (nginx workers).
stop_pid() {
  local pid=$1 kids i
  kill -0 "$pid" 2>/dev/null || { forget_pid "$pid"; return 0; }
  kids=$(children "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  forget_pid "$pid"
}
forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

stop_all() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
}

wait_http() { # URL STATUS TIMEOUT_S [curl args]
  local url=$1 want=$2 t=$3; shift 3
  local deadline=$(( $(date +%s) + t )) code
  while :; do
    code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true)
    [ "$code" = "$want" ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && { log "waited ${t}s for $url: last status ${code:-none}"; return 1; }
    sleep 0.1
  done
}

# Keys, a JWKS and tokens, cached in bench/.work (never committed) for 6 hours:
# tokens live 24 h, and 100k RS256 signatures take a minute to make.
make_tokens() {
  local n=$1
  TOK="$BENCH/.work/tokens-$n"
  if [ -f "$TOK/stamp" ] && [ $(( $(date +%s) - $(cat "$TOK/stamp") )) -lt 21600 ]; then
    log "reusing keys and tokens in ${TOK#$ROOT/} (minted $(( ($(date +%s) - $(cat "$TOK/stamp")) / 60 )) min ago)"
    return 0
  fi
  rm -rf "$TOK"; mkdir -p "$TOK"
  log "generating keys and minting $n unique tokens per algorithm"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TOK/rsa.pem" 2>/dev/null
  openssl pkey -in "$TOK/rsa.pem" -pubout -out "$TOK/rsa_pub.pem"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TOK/ec.pem"
  openssl pkey -in "$TOK/ec.pem" -pubout -out "$TOK/ec_pub.pem"
  "$PY" "$BENCH/lib/mint.py" jwks --key "$TOK/rsa_pub.pem:bench-rsa" --key "$TOK/ec_pub.pem:bench-ec" --out "$TOK/jwks.json"
  local m=("$PY" "$BENCH/lib/mint.py" tokens --iss "$ISS" --aud "$AUD" --ttl 86400)
  "${m[@]}" --key "$TOK/rsa.pem" --kid bench-rsa --count 1 --out "$TOK/rs_one.txt"
  "${m[@]}" --key "$TOK/ec.pem" --kid bench-ec --count 1 --out "$TOK/es_one.txt"
  "${m[@]}" --key "$TOK/ec.pem" --kid bench-ec --count "$n" --unique --out "$TOK/es_unique.txt"
  "${m[@]}" --key "$TOK/rsa.pem" --kid bench-rsa --count "$n" --unique --out "$TOK/rs_unique.txt"
  "$PY" "$BENCH/lib/mint.py" tamper --in "$TOK/rs_unique.txt" --out "$TOK/rs_bad.txt"
  date +%s > "$TOK/stamp"
}

make_tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null || die "openssl req failed"
}

write_upstream_conf() { # nginx answering a small 200, echoing what identity it received
  mkdir -p "$WORK/nginx-up"
  cat > "$WORK/upstream.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx-up/nginx.pid;
error_log $WORK/logs/upstream-error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $(( NOFILE - 100 )); }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $WORK/nginx-up/body;
  proxy_temp_path $WORK/nginx-up/proxy;
  fastcgi_temp_path $WORK/nginx-up/fcgi;
  uwsgi_temp_path $WORK/nginx-up/uwsgi;
  scgi_temp_path $WORK/nginx-up/scgi;
  map \$http_x_portcullis_assertion \$has_assertion { "" "0"; default "1"; }
  server {
    listen 127.0.0.1:$P_UP backlog=4096;
    location / {
      add_header X-Seen-User \$http_x_auth_request_user;
      add_header X-Seen-Assertion \$has_assertion;
      return 200 "ok\n";
    }
  }
}
EOF
}

write_nginx_proxy_conf() { # plain reverse proxy with upstream keep-alive, and the same over TLS
  mkdir -p "$WORK/nginx-px"
  cat > "$WORK/nginx-proxy.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx-px/nginx.pid;
error_log $WORK/logs/nginx-proxy-error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $(( NOFILE - 100 )); }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $WORK/nginx-px/body;
  proxy_temp_path $WORK/nginx-px/proxy;
  fastcgi_temp_path $WORK/nginx-px/fcgi;
  uwsgi_temp_path $WORK/nginx-px/uwsgi;
  scgi_temp_path $WORK/nginx-px/scgi;
  upstream up {
    server 127.0.0.1:$P_UP;
    keepalive 128;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$P_NGX backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    listen 127.0.0.1:$P_NGXS ssl backlog=4096;
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
}

write_haproxy_conf() { # jwt_verify RS256 / ES256 + iss, aud and exp checks; the subject forwarded
  cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $HAP_MAXCONN

defaults
  mode http
  maxconn $HAP_MAXCONN
  timeout connect 5s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  http-reuse always

frontend jwt
  bind 127.0.0.1:$P_HAP
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 ES256 }
  http-request deny deny_status 401 if { var(txn.alg) -m str RS256 } !{ var(txn.bearer),jwt_verify(txn.alg,"$TOK/rsa_pub.pem") -m int 1 }
  http-request deny deny_status 401 if { var(txn.alg) -m str ES256 } !{ var(txn.bearer),jwt_verify(txn.alg,"$TOK/ec_pub.pem") -m int 1 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str $ISS }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str $AUD }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request del-header Authorization
  http-request set-header X-Auth-Request-User %[var(txn.bearer),jwt_payload_query('\$.sub')]
  default_backend up

backend up
  server up1 127.0.0.1:$P_UP
EOF
}

# Portcullis: 20 routes (the benchmarked one is the 20th, behind 19 that do not
# match), a deny rule and two allow rules on it, identity headers and an ES256
# assertion for the upstream, audit lines to a file. A 21st route is public
# (auth: none), to isolate the cost of plain proxying.
#
# With a GRPC_LISTEN, the authorizer instead: the same routes judged for
# forward-auth (loopback is a trusted proxy) and for Envoy ext_authz on GRPC_LISTEN.
write_portcullis_conf() { # FILE LISTEN ADMIN AUDIT [tls] [GRPC_LISTEN]
  local file=$1 listen=$2 admin=$3 audit=$4 tls=${5:-} grpc=${6:-}
  {
    echo "server:"
    echo "  listen: $listen"
    echo "  public_url: https://portcullis.bench.local"
    echo "  shutdown_grace: 1s"
    if [ -n "$tls" ]; then
      echo "  tls: { cert_file: $WORK/tls.crt, key_file: $WORK/tls.key }"
    fi
    if [ -n "$grpc" ]; then
      echo "  trusted_proxies: [127.0.0.1/32]"
      echo "ext_authz:"
      echo "  grpc_listen: $grpc"
    fi
    echo "admin:"
    echo "  listen: $admin"
    echo "providers:"
    echo "  - name: bench-idp"
    echo "    issuer: $ISS"
    echo "    jwks_file: $TOK/jwks.json"
    echo "    audiences: [$AUD]"
    echo "    algorithms: [RS256, ES256]"
    echo "audit:"
    echo "  sink: file:$audit"
    echo "routes:"
    local i
    for i in $(seq 1 19); do
      case $(( i % 4 )) in
        0) cat <<EOF
  - name: svc$i
    match: { hosts: [svc$i.example.com], path_prefix: /svc$i }
    upstream: http://127.0.0.1:$P_UP
    policy:
      allow:
        - { groups: [team-$i, admins] }
EOF
        ;;
        1) cat <<EOF
  - name: svc$i
    match: { path_prefix: /svc$i/, methods: [GET, POST] }
    upstream: http://127.0.0.1:$P_UP
    policy:
      deny:
        - { name: no-interns, groups: [interns] }
      allow:
        - { scopes: ["svc$i:write"], methods: [POST] }
        - { scopes: ["svc$i:read"], methods: [GET] }
EOF
        ;;
        2) cat <<EOF
  - name: svc$i
    match: { path_regex: "^/svc$i/v[0-9]+/items" }
    upstream: http://127.0.0.1:$P_UP
    policy:
      allow:
        - { email_domains: [example.com], paths: ["/svc$i/v*/items/**"] }
        - { claims: { "realm_access.roles": [reader, writer] } }
EOF
        ;;
        3) cat <<EOF
  - name: svc$i
    match: { path: /svc$i/health }
    upstream: http://127.0.0.1:$P_UP
    auth: optional
    policy:
      allow:
        - { authenticated: true }
EOF
        ;;
      esac
    done
    cat <<EOF
  - name: orders
    match: { path_prefix: /api/orders }
    upstream: http://127.0.0.1:$P_UP
    policy:
      deny:
        - { name: suspended, groups: [suspended] }
      allow:
        - { name: admins, groups: [admins] }
        - { name: readers, scopes: ["orders:read"], methods: [GET, HEAD] }
  - name: public
    match: { path_prefix: /public }
    upstream: http://127.0.0.1:$P_UP
    auth: none
EOF
  } > "$file"
}

start_portcullis() { # NAME CONFIG ADMIN_PORT
  local name=$1 cfg=$2 admin=$3
  start "$name" "$PROXY_CPU" "$BIN" serve -c "$cfg"
  if ! wait_http "http://127.0.0.1:$admin/readyz" 200 30; then
    tail -20 "$WORK/logs/$name.log" >&2
    die "portcullis ($name) did not become ready"
  fi
}

# Everything needed by the scenarios: ports, tokens, certs, configs, servers.
setup_stack() { # N_TOKENS
  read -r P_UP P_NGX P_NGXS P_HAP P_PC P_PCA P_PCS P_PCSA P_AZ P_AZA P_AZG P_BARE <<<"$(free_ports 12)"
  mkdir -p "$WORK/logs" "$BENCH/.work"
  make_tokens "$1"
  RS_ONE=$(head -1 "$TOK/rs_one.txt"); ES_ONE=$(head -1 "$TOK/es_one.txt")
  make_tls_cert
  write_upstream_conf; write_nginx_proxy_conf; write_haproxy_conf
  write_portcullis_conf "$WORK/portcullis.yaml" "127.0.0.1:$P_PC" "127.0.0.1:$P_PCA" "$WORK/audit.log"
  write_portcullis_conf "$WORK/portcullis-tls.yaml" "127.0.0.1:$P_PCS" "127.0.0.1:$P_PCSA" "$WORK/audit-tls.log" tls
  write_portcullis_conf "$WORK/portcullis-authz.yaml" "127.0.0.1:$P_AZ" "127.0.0.1:$P_AZA" "$WORK/audit-authz.log" "" "127.0.0.1:$P_AZG"
  # The Check h2load posts: Envoy's description of GET /api/orders/42 with the token.
  python3 "$BENCH/lib/grpc_check.py" --host api.example --path /api/orders/42 \
    --header "authorization: Bearer $RS_ONE" --out "$WORK/check_rs256.bin" || die "cannot write the CheckRequest"
  "$BIN" check -c "$WORK/portcullis.yaml" >"$WORK/logs/check.log" 2>&1 \
    || { cat "$WORK/logs/check.log" >&2; die "portcullis check rejected the benchmark config"; }
  haproxy -c -q -f "$WORK/haproxy.cfg" >"$WORK/logs/haproxy-check.log" 2>&1 \
    || { cat "$WORK/logs/haproxy-check.log" >&2; die "haproxy rejected its config"; }

  start upstream "$UP_CPU" nginx -p "$WORK/nginx-up" -c "$WORK/upstream.conf" -e "$WORK/logs/upstream-error.log"
  start nginx "$PROXY_CPU" nginx -p "$WORK/nginx-px" -c "$WORK/nginx-proxy.conf" -e "$WORK/logs/nginx-proxy-error.log"
  start haproxy "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg"
  start bare "$PROXY_CPU" "$BARE" "127.0.0.1:$P_BARE" "127.0.0.1:$P_UP"
  wait_http "http://127.0.0.1:$P_UP/" 200 10 || die "upstream nginx did not start (logs/upstream.log)"
  wait_http "http://127.0.0.1:$P_NGX/" 200 10 || die "nginx proxy did not start"
  wait_http "http://127.0.0.1:$P_HAP/" 200 10 -H "Authorization: Bearer $RS_ONE" || die "haproxy did not start"
  wait_http "http://127.0.0.1:$P_BARE/" 200 10 || die "bare-hyper did not start (logs/bare.log)"
  start_portcullis pc "$WORK/portcullis.yaml" "$P_PCA"
  start_portcullis pcs "$WORK/portcullis-tls.yaml" "$P_PCSA"
  start_portcullis az "$WORK/portcullis-authz.yaml" "$P_AZA"
}

# forward-auth: nginx auth_request's description of the request, with the token.
FA_HEADERS=(-H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: /api/orders/42" -H "X-Forwarded-Host: api.example")
# One Check over HTTP/2 as Envoy sends it; the CheckResponse (protobuf) on stdout.
grpc_check_once() { # BODY_FILE
  curl -s --max-time 5 --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary "@$1" "http://127.0.0.1:$P_AZG/envoy.service.auth.v3.Authorization/Check"
}

# Each server answers as it must before any load: a wrong answer here fails the run.
sanity_checks() {
  local ok=1 h
  expect() { # WANT URL [curl args]
    local want=$1 url=$2; shift 2
    local got
    got=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "$@" "$url" || true)
    if [ "$got" != "$want" ]; then log "sanity: $url gave $got, want $want"; ok=0; fi
  }
  local rs="Authorization: Bearer $RS_ONE" es="Authorization: Bearer $ES_ONE"
  local bad="Authorization: Bearer $(head -1 "$TOK/rs_bad.txt")"
  expect 200 "http://127.0.0.1:$P_UP/api/orders/42"
  expect 200 "http://127.0.0.1:$P_NGX/api/orders/42"
  expect 200 "http://127.0.0.1:$P_BARE/api/orders/42"
  expect 200 "http://127.0.0.1:$P_HAP/api/orders/42" -H "$rs"
  expect 200 "http://127.0.0.1:$P_HAP/api/orders/42" -H "$es"
  expect 401 "http://127.0.0.1:$P_HAP/api/orders/42" -H "$bad"
  expect 401 "http://127.0.0.1:$P_HAP/api/orders/42"
  expect 200 "http://127.0.0.1:$P_PC/public/x"
  expect 200 "http://127.0.0.1:$P_PC/api/orders/42" -H "$es"
  expect 401 "http://127.0.0.1:$P_PC/api/orders/42" -H "$bad"
  expect 401 "http://127.0.0.1:$P_PC/api/orders/42"
  expect 200 "https://127.0.0.1:$P_NGXS/api/orders/42"
  expect 200 "https://127.0.0.1:$P_PCS/api/orders/42" -H "$rs"
  expect 200 "http://127.0.0.1:$P_AZ/.portcullis/authz" "${FA_HEADERS[@]}" -H "$rs"
  expect 401 "http://127.0.0.1:$P_AZ/.portcullis/authz" "${FA_HEADERS[@]}"
  h=$(curl -s -D - -o /dev/null --max-time 5 "${FA_HEADERS[@]}" -H "$rs" "http://127.0.0.1:$P_AZ/.portcullis/authz" | tr -d '\r')
  grep -qi '^x-auth-request-user: bench-user$' <<<"$h" || { log "sanity: forward-auth did not answer with the identity"; ok=0; }
  # An allowed CheckResponse carries the identity headers for Envoy to set.
  grpc_check_once "$WORK/check_rs256.bin" | grep -qa 'bench-user' \
    || { log "sanity: the ext_authz Check was not allowed with the identity"; ok=0; }
  # The full path really propagates: the upstream saw the subject and an assertion.
  h=$(curl -s -D - -o /dev/null --max-time 5 -H "$rs" "http://127.0.0.1:$P_PC/api/orders/42" | tr -d '\r')
  grep -qi '^x-seen-user: bench-user$' <<<"$h" || { log "sanity: upstream did not see X-Auth-Request-User"; ok=0; }
  grep -qi '^x-seen-assertion: 1$' <<<"$h" || { log "sanity: upstream did not see the assertion"; ok=0; }
  h=$(curl -s -D - -o /dev/null --max-time 5 -H "$rs" "http://127.0.0.1:$P_HAP/api/orders/42" | tr -d '\r')
  grep -qi '^x-seen-user: bench-user$' <<<"$h" || { log "sanity: haproxy did not forward the subject"; ok=0; }
  sleep 0.3
  [ -s "$WORK/audit.log" ] || { log "sanity: no audit line written to $WORK/audit.log"; ok=0; }
  [ $ok = 1 ] || die "sanity checks failed (server logs: bench/.work/last/logs/)"
  log "sanity checks passed"
}
