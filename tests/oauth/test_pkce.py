"""PKCE S256 and state."""

from __future__ import annotations

import re

from tokenkeep.oauth.pkce import code_challenge, new_pkce_pair, new_state, state_matches


def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_pair_is_valid_and_unique() -> None:
    pairs = [new_pkce_pair() for _ in range(50)]
    for pair in pairs:
        assert 43 <= len(pair.code_verifier) <= 128
        assert re.fullmatch(r"[A-Za-z0-9\-._~]+", pair.code_verifier)
        assert pair.code_challenge == code_challenge(pair.code_verifier)
        assert pair.method == "S256"
        assert "=" not in pair.code_challenge
        assert pair.code_verifier not in repr(pair)
    assert len({p.code_verifier for p in pairs}) == 50


def test_state_is_unguessable_and_compared_exactly() -> None:
    states = {new_state() for _ in range(100)}
    assert len(states) == 100
    s = next(iter(states))
    assert len(s) >= 40
    assert state_matches(s, s)
    assert not state_matches(s, s[:-1] + ("A" if s[-1] != "A" else "B"))
    assert not state_matches(s, None)
    assert not state_matches(s, "")
