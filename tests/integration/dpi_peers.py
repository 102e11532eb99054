"""Peers for the DPI tests, run as processes inside the virtual home's
namespaces: a TLS web server on the ISP side (any SNI, a small page and a
slow endless download; an optional small MSS so that a ClientHello crosses
several segments) and a QUIC client that sends the Initial packets a real
QUIC library (aioquic) builds for a chosen server name.

    python -m tests.integration.dpi_peers tls --bind A --port 443 --cert C --key K [--mss N]
    python -m tests.integration.dpi_peers quic --to A:443 --server-name www.tiktok.com
    python -m tests.integration.dpi_peers reorder --to A:443 --server-name discord.com
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import socket
import ssl
import threading
import time
from pathlib import Path

PAGE = b"dpi test page\n"
CHUNK = 16 * 1024


def write_self_signed(cert: Path, key: Path) -> None:
    """A self-signed certificate (clients use curl -k) and its key, as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dpi.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _serve_client(conn: ssl.SSLSocket) -> None:
    try:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 16384:
            data = conn.recv(4096)
            if not data:
                return
            request += data
        path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
        if path.startswith(b"/slow"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
            while True:  # endless, paced: a download that is still running
                conn.sendall(b"x" * CHUNK)
                time.sleep(0.02)
        body = PAGE
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + body)
    except OSError:
        pass
    finally:
        conn.close()


def serve_tls(bind: str, port: int, cert: str, key: str, mss: int | None) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if mss:  # announced in the SYN-ACK: the client's segments carry at most this
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    listener.bind((bind, port))
    listener.listen(64)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=_handshake, args=(context, raw), daemon=True).start()


def _handshake(context: ssl.SSLContext, raw: socket.socket) -> None:
    try:
        conn = context.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError):
        raw.close()
        return
    _serve_client(conn)


def send_quic_initial(to: str, server_name: str, repeat: int) -> None:
    """The client's first flight (Initial packets) as aioquic builds it,
    sent `repeat` times from one socket (the same flow)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    host, port = to.rsplit(":", 1)
    address = (host, int(port))
    config = QuicConfiguration(is_client=True, server_name=server_name, alpn_protocols=["h3"])
    connection = QuicConnection(configuration=config)
    connection.connect(address, now=time.time())
    datagrams = [data for data, _ in connection.datagrams_to_send(now=time.time())]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(repeat):
            for data in datagrams:
                sock.sendto(data, address)
    print(f"sent {len(datagrams)} datagram(s) x {repeat}", flush=True)


def client_hello(server_name: str) -> bytes:
    """The ClientHello Python's ssl module sends for server_name."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server's answer
        tls.do_handshake()
    return outgoing.read()


def reordered_hello(to: str, server_name: str, pieces: int) -> None:
    """A TCP connection made by hand (scapy; the kernel's RSTs for it are
    dropped by the caller's nftables rule) whose ClientHello goes out in
    `pieces` segments, last first; prints "server hello" when the server
    answers with a TLS handshake record: it reassembled the hello."""
    import random

    from scapy.all import IP, TCP, conf, send, sniff, sr1

    conf.verb = 0
    host, port = to.rsplit(":", 1)
    dport, sport = int(port), random.randint(20000, 30000)
    hello = client_hello(server_name)
    seq = random.randint(0, 2**31)
    synack = sr1(IP(dst=host) / TCP(sport=sport, dport=dport, flags="S", seq=seq), timeout=5)
    if synack is None or synack[TCP].flags & 0x12 != 0x12:
        raise SystemExit("no SYN-ACK")
    ack = synack[TCP].seq + 1
    base = IP(dst=host) / TCP(sport=sport, dport=dport, flags="A", seq=seq + 1, ack=ack)
    send(base)
    size = -(-len(hello) // pieces)
    segments = [(i, hello[i : i + size]) for i in range(0, len(hello), size)]
    for offset, data in reversed(segments):
        send(
            IP(dst=host)
            / TCP(sport=sport, dport=dport, flags="PA", seq=seq + 1 + offset, ack=ack)
            / data
        )
    answer = sniff(
        filter=f"tcp and src host {host} and src port {dport} and dst port {sport}",
        lfilter=lambda p: bytes(p[TCP].payload)[:1] == b"\x16",
        count=1,
        timeout=5,
    )
    send(IP(dst=host) / TCP(sport=sport, dport=dport, flags="R", seq=seq + 1 + len(hello)))
    print(f"hello of {len(hello)} bytes in {len(segments)} segments, last first", flush=True)
    if not answer:
        raise SystemExit("no server hello")
    print("server hello", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    tls = sub.add_parser("tls")
    tls.add_argument("--bind", required=True)
    tls.add_argument("--port", type=int, default=443)
    tls.add_argument("--cert", required=True)
    tls.add_argument("--key", required=True)
    tls.add_argument("--mss", type=int)
    quic = sub.add_parser("quic")
    quic.add_argument("--to", required=True)
    quic.add_argument("--server-name", required=True)
    quic.add_argument("--repeat", type=int, default=1)
    reorder = sub.add_parser("reorder")
    reorder.add_argument("--to", required=True)
    reorder.add_argument("--server-name", required=True)
    reorder.add_argument("--pieces", type=int, default=3)
    args = parser.parse_args()
    if args.what == "reorder":
        reordered_hello(args.to, args.server_name, args.pieces)
    elif args.what == "tls":
        serve_tls(args.bind, args.port, args.cert, args.key, args.mss)
    else:
        send_quic_initial(args.to, args.server_name, args.repeat)


if __name__ == "__main__":
    main()
