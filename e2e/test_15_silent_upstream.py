"""An upstream connection whose peer goes silent without a word (its host gone,
a network partition, a NAT that dropped the flow) is given up within about a
minute, and the next requests go over a new connection.

The upstream is the real Debian nginx speaking h2 over TLS (ALPN), so the proxy
shares one connection among all requests: while that connection looks alive,
every request is sent into it. iptables drops that connection's packets in
both directions, while new connections to the same port still work. Without
the connector's TCP keep-alive and user timeout, Linux keeps retransmitting for
about fifteen minutes and every request in between times out.
"""

import datetime
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import free_ports, portcullis_bin, start, stop, wait_until

# The connector's PEER_SILENT_FOR (60 s), with room for the probe in flight
# when it runs out and for the request that finds the new connection.
GIVE_UP_WITHIN = 90

NGINX = """
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx.err warn;
events {{}}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {work}/up.pem;
    ssl_certificate_key {work}/up.key;
    keepalive_timeout 1h;
    location / {{ return 200 "up $server_protocol"; }}
  }}
}}
"""

CONFIG = """
server:
  listen: 127.0.0.1:{port}
  request_timeout: 5s
admin:
  listen: 127.0.0.1:{admin_port}
audit:
  sink: none
routes:
  - name: up
    match: {{ path_prefix: / }}
    upstream: https://127.0.0.1:{up_port}
    upstream_tls: {{ ca_file: {work}/ca.pem, server_name: up.internal }}
    auth: none
"""


def write_certs(work: Path) -> None:
    """A CA and a leaf for `up.internal` signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "silent-upstream CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "up.internal")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("up.internal")]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (work / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (work / "up.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (work / "up.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def iptables_usable() -> str | None:
    """None when iptables can change rules here, else why not."""
    if not shutil.which("iptables"):
        return "iptables is not installed (scripts/test installs it)"
    probe = subprocess.run(["iptables", "-w", "-L", "INPUT", "-n"], capture_output=True,
                           text=True, timeout=30)
    if probe.returncode != 0:
        return f"iptables cannot run here (root with CAP_NET_ADMIN): {probe.stderr.strip()}"
    return None


def upstream_ports(pid: int, up_port: int) -> set[int]:
    """The local ports of the process's established connections to the upstream."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", f"127.0.0.1:{up_port}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return {int(m.group(1)) for line in out.splitlines() if f"pid={pid}," in line
            for m in [re.search(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:" + str(up_port), line)] if m}


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def drop_rules(local_port: int, up_port: int) -> list[list[str]]:
    return [["INPUT", "-p", "tcp", "--sport", str(up_port), "--dport", str(local_port),
             "-j", "DROP"],
            ["INPUT", "-p", "tcp", "--sport", str(local_port), "--dport", str(up_port),
             "-j", "DROP"]]


def test_a_silent_upstream_connection_is_given_up_within_a_minute(tmp_path):
    why_not = iptables_usable()
    if why_not:
        pytest.skip(why_not)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is required (scripts/test installs it)")
    work = tmp_path
    write_certs(work)
    port, admin_port, up_port = free_ports(3)
    (work / "nginx.conf").write_text(NGINX.format(work=work, port=up_port))
    (work / "portcullis.yaml").write_text(CONFIG.format(
        port=port, admin_port=admin_port, up_port=up_port, work=work))
    procs, rules = [], []
    try:
        ng = start([nginx, "-c", str(work / "nginx.conf"), "-e", str(work / "nginx.err")],
                   work / "nginx.log", stdout=subprocess.DEVNULL)
        procs.append(ng)
        proxy = start([portcullis_bin(), "serve", "-c", str(work / "portcullis.yaml")],
                      work / "portcullis.stderr", stdout=subprocess.DEVNULL)
        procs.append(proxy)
        wait_until("Portcullis /readyz",
                   lambda: httpx.get(f"http://127.0.0.1:{admin_port}/readyz").status_code == 200,
                   proxy, work / "portcullis.stderr")
        wait_until("nginx", lambda: port_open(up_port), ng, work / "nginx.err")
        base = f"http://127.0.0.1:{port}/"
        first = httpx.get(base)
        assert first.text == "up HTTP/2.0", "the upstream is h2, one shared connection"
        [old] = upstream_ports(proxy.pid, up_port)

        for rule in drop_rules(old, up_port):
            subprocess.run(["iptables", "-w", "-I", *rule], check=True, timeout=30)
            rules.append(rule)
        silenced = time.monotonic()
        answers = []
        while True:
            try:
                status = httpx.get(base, timeout=15).status_code
            except httpx.HTTPError as err:
                status = type(err).__name__
            elapsed = time.monotonic() - silenced
            answers.append((round(elapsed), status))
            if status == 200 or elapsed > GIVE_UP_WITHIN + 30:
                break
            time.sleep(2)

        assert status == 200, f"still no answer {elapsed:.0f} s after the silence: {answers}"
        assert elapsed < GIVE_UP_WITHIN, f"recovered only after {elapsed:.0f} s: {answers}"
        # Requests sent into the silent connection timed out; none was answered by it.
        assert all(s == 504 or s == 502 for _, s in answers[:-1]), answers
        now = upstream_ports(proxy.pid, up_port)
        assert now and old not in now, f"still on the silent connection: {now}"
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-w", "-D", *rule], timeout=30)
        for p in reversed(procs):
            stop(p)
