"""COSE_Sign1 interoperability and the low-level verifier."""

import json
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from relay import cose

VECTOR = json.loads((Path(__file__).parent / "data" / "cose-wg-eddsa-sig-01.json").read_text())


def _vector_key() -> Ed25519PublicKey:
    x = bytes.fromhex(VECTOR["input"]["sign0"]["key"]["x_hex"])
    return Ed25519PublicKey.from_public_bytes(x)


def test_cose_wg_ed25519_example_verifies() -> None:
    """Test that the COSE working group's Ed25519 example (alg -8, kid unprotected) verifies."""
    data = bytes.fromhex(VECTOR["output"]["cbor"])
    assert cose.verify_sign1(data, _vector_key()) == b"This is the content."
    parsed = cose.decode_sign1(data)
    assert parsed.kid == b"11"
    assert parsed.to_be_signed().hex().upper() == VECTOR["intermediates"]["ToBeSign_hex"]


def test_cose_wg_example_untagged_verifies() -> None:
    """Test that the same message without the COSE_Sign1 tag is accepted too."""
    item = cbor2.loads(bytes.fromhex(VECTOR["output"]["cbor"]))
    untagged = cbor2.dumps(list(item.value))
    assert cose.verify_sign1(untagged, _vector_key()) == b"This is the content."


def test_cose_wg_example_tampered_payload_fails() -> None:
    """Test that changing one payload byte of the published example fails the signature."""
    data = bytearray(bytes.fromhex(VECTOR["output"]["cbor"]))
    data[data.index(b"This") + 1] ^= 0x20
    with pytest.raises(cose.CoseError) as err:
        cose.verify_sign1(bytes(data), _vector_key())
    assert err.value.reason == "bad-signature"


def test_sign1_matches_rfc_8032_deterministic_signature() -> None:
    """Test that our signer reproduces the example's signature bytes when given its headers."""
    d = bytes.fromhex(VECTOR["input"]["sign0"]["key"]["d_hex"])
    key = Ed25519PrivateKey.from_private_bytes(d)
    protected = bytes.fromhex("A201270300")
    tbs = cose.sig_structure(protected, b"This is the content.")
    expected = cbor2.loads(bytes.fromhex(VECTOR["output"]["cbor"])).value[3]
    assert key.sign(tbs) == expected


def test_sign1_emits_alg_minus_19_and_protected_kid() -> None:
    """Test that our own messages use alg -19 with the key id covered by the signature."""
    key = Ed25519PrivateKey.generate()
    raw = cose.sign1(b"payload", key, kid=b"\x01\x02\x03\x04")
    msg = cose.decode_sign1(raw)
    assert msg.protected == {1: -19, 4: b"\x01\x02\x03\x04"}
    assert msg.unprotected == {}
    assert cose.verify_sign1(raw, key.public_key()) == b"payload"


def test_other_algorithms_are_refused() -> None:
    """Test that a COSE_Sign1 claiming ES256 (-7) is rejected as an unsupported algorithm."""
    key = Ed25519PrivateKey.generate()
    protected = cbor2.dumps({1: -7})
    sig = key.sign(cose.sig_structure(protected, b"x"))
    raw = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, b"x", sig]))
    with pytest.raises(cose.CoseError) as err:
        cose.verify_sign1(raw, key.public_key())
    assert err.value.reason == "unsupported-algorithm"


def test_trailing_bytes_after_the_structure_are_malformed() -> None:
    """Test that bytes after a valid COSE_Sign1 make it malformed rather than being ignored."""
    key = Ed25519PrivateKey.generate()
    raw = cose.sign1(b"payload", key)
    with pytest.raises(cose.CoseError) as err:
        cose.verify_sign1(raw + b"\x00", key.public_key())
    assert err.value.reason == "malformed"


@pytest.mark.parametrize("alg", [{}, [], b"\x27", "-19", True])
def test_an_algorithm_of_the_wrong_type_is_refused_not_raised(alg: object) -> None:
    """Test that an alg header that is no integer (a map, a list, ...) is an unsupported one."""
    key = Ed25519PrivateKey.generate()
    protected = cbor2.dumps({1: alg})
    sig = key.sign(cose.sig_structure(protected, b"x"))
    raw = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, b"x", sig]))
    with pytest.raises(cose.CoseError) as err:
        cose.verify_sign1(raw, key.public_key())
    assert err.value.reason == "unsupported-algorithm"
