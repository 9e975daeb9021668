"""Raw request targets that must never leave the gateway (shared by the unit and e2e tests).

Each entry is the raw path (and optional raw query) a hostile or confused client sends.
"""

from __future__ import annotations

# (raw path, raw query)
SSRF_ATTEMPTS: list[tuple[bytes, bytes]] = [
    # absolute URLs and schemes smuggled into the path
    (b"/proxy/http://evil.example/services/data", b""),
    (b"/proxy/https://evil.example/", b""),
    (b"/proxy/https:evil.example/x", b""),
    (b"/proxy/javascript:alert(1)", b""),
    (b"/proxy/file:///etc/passwd", b""),
    (b"/c/conn1/http://evil.example/", b""),
    (b"/proxy/http%3A%2F%2Fevil.example%2F", b""),
    (b"/proxy/http%253A%252F%252Fevil.example", b""),
    # protocol-relative //host
    (b"/proxy//evil.example/services", b""),
    (b"/c/conn1//evil.example/services", b""),
    (b"/proxy/%2F%2Fevil.example/x", b""),
    (b"/proxy/%2f/evil.example", b""),
    (b"/proxy/services/%2F%2Fevil.example", b""),
    # dot segments, encoded dot segments, double encodings, overlong UTF-8
    (b"/proxy/services/../../etc/passwd", b""),
    (b"/proxy/services/..", b""),
    (b"/proxy/./services", b""),
    (b"/proxy/services/%2e%2e/x", b""),
    (b"/proxy/services/%2E%2E/x", b""),
    (b"/proxy/services/.%2e/x", b""),
    (b"/proxy/services/%2e./x", b""),
    (b"/proxy/services/%252e%252e/x", b""),
    (b"/proxy/services/%25252e%25252e/x", b""),
    (b"/proxy/services/..%2fx", b""),
    (b"/proxy/services/..%2Fx", b""),
    (b"/proxy/services/..%5cx", b""),
    (b"/proxy/services/%c0%ae%c0%ae/x", b""),
    (b"/proxy/services/%e0%80%ae%e0%80%ae/x", b""),
    (b"/proxy/services/%c0%af..%c0%af", b""),
    (b"/proxy/services/%ef%bc%8e%ef%bc%8e/x", b""),  # full-width dots, NFKC -> ..
    (b"/proxy/services/%u002e%u002e/x", b""),
    (b"/proxy/services/..;/x", b""),
    (b"/c/conn1/services/%2e%2e/%2e%2e/x", b""),
    # userinfo @ and backslashes
    (b"/proxy/@evil.example/x", b""),
    (b"/proxy/services%40evil.example", b""),
    (b"/proxy/services\\..\\x", b""),
    (b"/proxy/%5cevil.example", b""),
    (b"/proxy/%255cevil.example", b""),
    # CR/LF, NUL, tabs: request splitting and header injection
    (b"/proxy/services%0d%0aHost:%20evil.example", b""),
    (b"/proxy/services%0aX-Injected:1", b""),
    (b"/proxy/services%0D%0A", b""),
    (b"/proxy/services%250d%250a", b""),
    (b"/proxy/services%00.json", b""),
    (b"/proxy/services%2500", b""),
    (b"/proxy/services%09x", b""),
    (b"/proxy/services/x", b"q=1\r\nHost: evil.example"),
    (b"/proxy/services/x", b"q=1\x00"),
    (b"/proxy/services/x", b"q=a b"),
    # malformed escapes and a hostile connection id
    (b"/proxy/services/%zz", b""),
    (b"/proxy/services/%", b""),
    (b"/c/..%2fother/services", b""),
    (b"/c/%2e%2e/services", b""),
    (b"/c/conn1@evil.example/services", b""),
]
