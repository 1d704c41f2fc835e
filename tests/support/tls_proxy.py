"""An HTTPS front for a plain-HTTP server, with a certificate made for the test.

Stands in for a PACS served over HTTPS with a self-signed certificate (as the reference PACS is):
GET requests are forwarded with their Authorization and Accept headers, and the answer streams
back, framed by closing the connection.

Run: ``python -m tests.support.tls_proxy PORT UPSTREAM CERTFILE KEYFILE``.
"""

from __future__ import annotations

import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


def serve(port: int, upstream: str, certfile: str, keyfile: str) -> None:
    session = requests.Session()

    class Forward(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {
                k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept")
            }
            with session.get(
                upstream + self.path, headers=headers, stream=True, timeout=30
            ) as answer:
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in answer.iter_content(1 << 16):
                    self.wfile.write(chunk)
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    server = ThreadingHTTPServer(("127.0.0.1", port), Forward)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
