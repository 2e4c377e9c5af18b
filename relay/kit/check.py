"""``relay broker check``: what in a broker kit runs out, on the broker host (docs/broker.md).

The CRL first: mosquitto checks every client against ``crl.pem``, and once its next update has
passed OpenSSL refuses every client, so the whole region loses its broker at once. Then the CA,
the server certificate and every node and bridge certificate in the kit (a revoked one is only
listed). Each check is ok or fail with a one-line fix, in Dutch and English (``relay.checks``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from relay.checks import Check, expiry, local_day

FIX_EN = "run relay broker kit again on this directory (the same --node list); restart mosquitto"
FIX_NL = "draai relay broker kit opnieuw op deze map (dezelfde --node-lijst); herstart mosquitto"


def _load_cert(path: Path) -> x509.Certificate | str:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return str(exc)


def crl_check(out: Path, ca: x509.Certificate | None, now: dt.datetime) -> tuple[Check, set[int]]:
    """The CRL's signature and next update; also the serials it revokes."""
    path = out / "crl.pem"
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Check(
            "crl.pem",
            "fail",
            f"{path}: cannot read the CRL: {exc}",
            FIX_EN,
            nl=(f"{path}: CRL niet leesbaar: {exc}", FIX_NL),
        ), set()
    revoked = {r.serial_number for r in crl}
    public = ca.public_key() if ca is not None else None
    if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) or not (
        crl.is_signature_valid(public)
    ):
        return Check(
            "crl.pem",
            "fail",
            f"{path}: not signed by the kit's CA (ca.crt)",
            FIX_EN,
            nl=(f"{path}: niet ondertekend door de CA van de kit (ca.crt)", FIX_NL),
        ), revoked
    until = crl.next_update_utc
    if until is None:
        return Check(
            "crl.pem",
            "ok",
            f"{path}: {len(revoked)} revoked, no next update",
            nl=(f"{path}: {len(revoked)} ingetrokken, geen volgende update", ""),
        ), revoked
    near = expiry(until.timestamp(), now.timestamp())
    if near is None:
        when = local_day(until.timestamp())
        return Check(
            "crl.pem",
            "ok",
            f"{path}: {len(revoked)} revoked, valid until {when}",
            nl=(f"{path}: {len(revoked)} ingetrokken, geldig tot {when}", ""),
        ), revoked
    if until < now:
        then = (": mosquitto refuses every client now", ": mosquitto weigert nu elke client")
    else:
        then = ("; then mosquitto refuses every client", "; daarna weigert mosquitto elke client")
    return Check(
        "crl.pem",
        "fail",
        f"{path}: {near[0]}{then[0]}",
        FIX_EN,
        nl=(f"{path}: {near[1]}{then[1]}", FIX_NL),
    ), revoked


def cert_check(
    path: Path, cert: x509.Certificate | str, revoked: set[int], now: dt.datetime
) -> Check:
    key = path.name
    if isinstance(cert, str):
        return Check(
            key,
            "fail",
            f"{path}: cannot read the certificate: {cert}",
            FIX_EN,
            nl=(f"{path}: certificaat niet leesbaar: {cert}", FIX_NL),
        )
    if cert.serial_number in revoked:
        return Check(
            key, "ok", f"{path}: revoked (in crl.pem)", nl=(f"{path}: ingetrokken (in crl.pem)", "")
        )
    until = cert.not_valid_after_utc.timestamp()
    near = expiry(until, now.timestamp())
    if near is None:
        when = local_day(until)
        return Check(
            key, "ok", f"{path}: valid until {when}", nl=(f"{path}: geldig tot {when}", "")
        )
    return Check(
        key,
        "fail",
        f"{path}: {near[0]}",
        f"renew it: {FIX_EN} (--renew NAME for a node)",
        nl=(f"{path}: {near[1]}", f"vernieuw het: {FIX_NL} (--renew NAAM voor een node)"),
    )


def kit_checks(out: Path, now: dt.datetime | None = None) -> list[Check]:
    """Every check of the kit in ``out``; the CRL first."""
    now = now if now is not None else dt.datetime.now(dt.UTC)
    ca = _load_cert(out / "ca.crt")
    crl, revoked = crl_check(out, ca if not isinstance(ca, str) else None, now)
    checks = [crl, cert_check(out / "ca.crt", ca, set(), now)]
    for path in sorted(out.glob("*.crt")):
        if path.name != "ca.crt":
            checks.append(cert_check(path, _load_cert(path), revoked, now))
    return checks
