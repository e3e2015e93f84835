"""An HTTPS upstream speaking HTTP/2 (ALPN h2) that records the request
trailers it receives and answers, as JSON, the headers and trailers of each
request. Built on the `h2` library directly, since ASGI servers do not expose
request trailers.

Usage: h2_trailers.py PORT CERT KEY
"""

import json
import socket
import ssl
import sys
import threading

import h2.config
import h2.connection
import h2.events


def serve_connection(sock: ssl.SSLSocket) -> None:
    # Portcullis sends the judged host as `host` beside an `:authority` naming the
    # upstream it connects to; this recorder wants to see every request, so it
    # does not refuse that pair as a strict server may.
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=False, validate_inbound_headers=False))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    streams: dict[int, dict] = {}
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    streams[event.stream_id] = {
                        "headers": [[k.decode(), v.decode()] for k, v in event.headers],
                        "trailers": [], "body": ""}
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id]["body"] += event.data.decode("latin-1")
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    streams[event.stream_id]["trailers"] = [
                        [k.decode(), v.decode()] for k, v in event.headers]
                elif isinstance(event, h2.events.StreamEnded):
                    seen = streams.pop(event.stream_id, {})
                    seen["upstream"] = "h2-trailers"
                    payload = json.dumps(seen).encode()
                    conn.send_headers(event.stream_id, [
                        (":status", "200"), ("content-type", "application/json"),
                        ("content-length", str(len(payload)))])
                    conn.send_data(event.stream_id, payload, end_stream=True)
            sock.sendall(conn.data_to_send())
    except (OSError, h2.exceptions.ProtocolError):
        return
    finally:
        sock.close()


def main() -> None:
    port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    listener = socket.create_server(("127.0.0.1", port))
    while True:
        raw, _ = listener.accept()
        try:
            tls = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        threading.Thread(target=serve_connection, args=(tls,), daemon=True).start()


if __name__ == "__main__":
    main()
