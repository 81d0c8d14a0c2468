"""`ollamaflow keys` and `ollamaflow nats-config`: what securing the bus needs, made on the spot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# The environment variables deploy/nats.conf reads the two roles' passwords from.
PASSWORD_VARIABLES = {
    "controlplane": "OLLAMAFLOW_NATS_CONTROLPLANE_PASSWORD",
    "dataplane": "OLLAMAFLOW_NATS_DATAPLANE_PASSWORD",
}


def keys(
    directory: Annotated[
        Path,
        typer.Option("--dir", help="Where the key pair goes (the private key owner-only)."),
    ] = Path("."),
    public_dir: Annotated[
        Path | None,
        typer.Option("--public-dir", help="Also put a copy of the public key here (for the data planes)."),
    ] = None,
) -> None:
    """Make the snapshot signing key pair (ed25519, PEM), or keep the one already in --dir.

    The control planes sign with the private key (OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE); data planes
    verify with the public one (OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES). To rotate, make a new pair in
    another directory, give data planes both public keys, then switch the control planes.
    """
    from shared.signing_keys import PUBLIC_KEY_NAME, ensure_key_pair, load_signer

    try:
        private, public = ensure_key_pair(directory)
        signer = load_signer(private)
        if public_dir is not None:
            public_dir.mkdir(parents=True, exist_ok=True)
            copy = public_dir / PUBLIC_KEY_NAME
            copy.write_bytes(public.read_bytes())
            copy.chmod(0o644)
            public = copy
    except OSError as exc:
        typer.echo(f"ollamaflow keys: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"key id {signer.key_id}")
    typer.echo(f"OLLAMAFLOW_SNAPSHOT_SIGNING_KEY_FILE={private.resolve()}   (control planes only)")
    typer.echo(f"OLLAMAFLOW_SNAPSHOT_PUBLIC_KEY_FILES={public.resolve()}   (data planes)")


def nats_config(
    namespace: Annotated[
        str, typer.Option("--namespace", help="The bus namespace. [env OLLAMAFLOW_BUS_NAMESPACE]")
    ] = "",
) -> None:
    """Print the NATS `authorization` block for OllamaFlow: users `controlplane` and `dataplane`, each
    with its role's permissions, their passwords read by NATS from OLLAMAFLOW_NATS_CONTROLPLANE_PASSWORD
    and OLLAMAFLOW_NATS_DATAPLANE_PASSWORD. Put it in the NATS server's config (deploy/nats.conf holds
    it for the default namespace)."""
    import os

    from ollamaflow.nats_config import ROLE_USERS, NatsUser, env_password, render_authorization
    from shared.bus import DEFAULT_NAMESPACE, BusNames
    from shared.bus_permissions import ROLES

    names = BusNames(namespace or os.environ.get("OLLAMAFLOW_BUS_NAMESPACE") or DEFAULT_NAMESPACE)
    users = [NatsUser(ROLE_USERS[role], role, env_password(PASSWORD_VARIABLES[role])) for role in ROLES]
    typer.echo(render_authorization(names, users), nl=False)
