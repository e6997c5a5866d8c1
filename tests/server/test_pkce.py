"""The reference server's own PKCE check (written apart from the client's)."""

from __future__ import annotations

from freshtoken.server._pkce import s256, verifier_matches

# RFC 7636 Appendix B
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_s256_matches_the_rfc_example() -> None:
    """The server computes the challenge of RFC 7636's Appendix B exactly."""
    assert s256(VERIFIER) == CHALLENGE


def test_a_verifier_matches_only_its_own_challenge() -> None:
    """Another verifier, or the challenge sent back as the verifier, does not match."""
    assert verifier_matches(VERIFIER, CHALLENGE)
    assert not verifier_matches(VERIFIER[:-1] + "j", CHALLENGE)
    assert not verifier_matches(CHALLENGE, CHALLENGE)
