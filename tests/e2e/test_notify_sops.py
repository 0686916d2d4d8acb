"""A SOPS-encrypted webhook (URL and key) end to end: validated, sealed by apply, signed on delivery.

The Instance file is encrypted by ``linkctl secrets encrypt --encrypted-regex '^(url|secret)$'``
(files the real sops reads); ``apply`` stores the target, ``keeper --once`` announces a
status change to a real receiver with a signature made with the decrypted key, and neither
the key nor the URL's secret path appears in any output or in the store file.
"""

from __future__ import annotations

import re
import time
import uuid

from reconciler.domain.notify import NotifyTargetDecl, target_origin
from reconciler.secrets import Secret
from reconciler.services.notify import verify
from tests.support.cli import INSTANCE, Linkctl, link_doc
from tests.support.fakes import response
from tests.support.oracle_links import open_store
from tests.support.webhooks import Receiver


def test_a_sops_encrypted_webhook_is_sealed_and_signs_with_the_decrypted_key(linkctl: Linkctl) -> None:
    marker = f"hook-{uuid.uuid4().hex}"
    key = f"{marker}-key"
    links = linkctl.cwd / "links"
    links.mkdir()
    linkctl("keygen", "-o", str(linkctl.cwd / "age.txt"))
    found = re.search(r"age1[0-9a-z]+", (linkctl.cwd / "age.txt").read_text(encoding="utf-8"))
    assert found is not None
    linkctl.env["SOPS_AGE_KEY_FILE"] = str(linkctl.cwd / "age.txt")
    linkctl.env["S"] = "client-secret-value"
    with Receiver().running() as receiver:
        instance = links / "instance.yaml"
        instance.write_text(
            INSTANCE + f"  notify:\n    - url: https://hooks.example.com/{marker}\n      secret: {key}\n",
            encoding="utf-8",
        )
        regex = "^(url|secret)$"
        linkctl(
            "secrets", "encrypt", "--age", found.group(0), "--encrypted-regex", regex, "-i", str(instance)
        )
        text = instance.read_text(encoding="utf-8")
        assert marker not in text and text.count("ENC[AES256_GCM,") == 3  # two values and the MAC
        (links / "a.yaml").write_text(link_doc("a", secret_env="S"), encoding="utf-8")
        outputs = [linkctl("validate", "links"), linkctl("apply", "links")]
        assert "status webhooks stored: 1 target(s) (https://hooks.example.com)" in outputs[-1].stderr
        # Point the sealed target at the local receiver, as an https URL could not be served here.
        with open_store(linkctl.env) as store:
            (target,) = store.notify_targets()
            assert (
                target.url.reveal() == f"https://hooks.example.com/{marker}" and target.secret.reveal() == key
            )
            local = NotifyTargetDecl(Secret(receiver.url), target.secret, target_origin(receiver.url))
            store.put_notify_targets([local], actor="test", now=time.time())
        outputs.append(linkctl("keeper", "--once", expect=None))  # the baseline
        with open_store(linkctl.env) as store:
            store.save_authorization("a", response(at=time.time()), clock_now=time.time())
        outputs.append(linkctl("keeper", "--once", expect=None))
        (post,) = receiver.wait_for(1)
    assert verify(
        key,
        post.headers["X-Linkctl-Timestamp"],
        post.body,
        post.headers["X-Linkctl-Signature"],
        now=time.time(),
    )
    assert post.json["new_status"] == "healthy"
    outputs.append(linkctl("state", "events", "-o", "json"))
    for result in outputs:
        assert marker not in result.output, result
    assert marker.encode() not in linkctl.state_db.read_bytes()
