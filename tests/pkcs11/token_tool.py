"""Another program on the same token, run in its own process: makes keys the way an operator's
tool would (any label, with or without CKA_START_DATE) and reports objects' attributes.

    python token_tool.py MODULE TOKEN PIN make LABEL KEY_TYPE [START_DATE]
    python token_tool.py MODULE TOKEN PIN inspect LABEL

`inspect` prints a JSON list, one entry per object carrying LABEL.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.util.ec import encode_named_curve_parameters

FLAGS = (
    Attribute.TOKEN,
    Attribute.PRIVATE,
    Attribute.SENSITIVE,
    Attribute.EXTRACTABLE,
    Attribute.ALWAYS_SENSITIVE,
    Attribute.NEVER_EXTRACTABLE,
    Attribute.SIGN,
    Attribute.VERIFY,
    Attribute.DECRYPT,
    Attribute.ENCRYPT,
    Attribute.UNWRAP,
    Attribute.WRAP,
    Attribute.DERIVE,
)


def make(session: pkcs11.Session, label: str, key_type: str, start: str | None) -> None:
    extra = {Attribute.START_DATE: datetime.date.fromisoformat(start)} if start else {}
    options: dict[str, Any] = {
        "store": True,
        "label": label,
        "id": label.encode()[:16],
        "public_template": extra,
        "private_template": extra,
    }
    if key_type == "rsa-2048":
        session.generate_keypair(
            KeyType.RSA, 2048, mechanism=Mechanism.RSA_PKCS_KEY_PAIR_GEN, **options
        )
        return
    curve = {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}[key_type]
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
    )
    params.generate_keypair(**options)


def inspect(session: pkcs11.Session, label: str) -> list[dict[str, object]]:
    found = []
    for obj in session.get_objects({Attribute.LABEL: label}):
        entry: dict[str, object] = {
            "class": obj[Attribute.CLASS].name,
            "id": obj[Attribute.ID].hex(),
        }
        for attr in FLAGS:
            try:
                entry[attr.name] = bool(obj[attr])
            except (pkcs11.PKCS11Error, NotImplementedError):
                continue
        found.append(entry)
    return found


def main() -> None:
    module, token_label, pin, command, label, *rest = sys.argv[1:]
    lib = pkcs11.lib(module)
    token = lib.get_token(token_label=token_label)
    with token.open(rw=True, user_pin=pin) as session:
        if command == "make":
            make(session, label, rest[0], rest[1] if len(rest) > 1 else None)
        else:
            print(json.dumps(inspect(session, label)))
    lib.finalize()


if __name__ == "__main__":
    main()
