"""`ollamaflow sim`: a simulated Ollama or OpenAI-compatible backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def sim(
    port: Annotated[int, typer.Option(help="Port to listen on (0 = any free port).", min=0, max=65535)],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="API: 'ollama' (/api/* plus Ollama's /v1 layer) or 'openai' (only /v1/*, like vLLM).",
        ),
    ] = "ollama",
    dialect: Annotated[
        str,
        typer.Option(
            "--dialect",
            help="With --format openai: 'vllm' presents the server as vLLM (owned_by \"vllm\" and "
            "max_model_len in /v1/models); empty for a plain OpenAI-compatible server.",
        ),
    ] = "",
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated models to serve. Names containing 'minilm' or 'embed' are embedding "
            "models; 'think', 'qwen3' or 'deepseek-r1' make a thinking model.",
        ),
    ] = "llama3.2:latest,qwen2.5:0.5b,all-minilm:latest",
    tokens_per_second: Annotated[
        float, typer.Option(help="Pace streamed chunks at this rate (0 = as fast as possible).", min=0)
    ] = 0.0,
    latency_ms: Annotated[
        float, typer.Option(help="Delay before the first byte of each answer.", min=0)
    ] = 0.0,
    fail_rate: Annotated[
        float,
        typer.Option(
            help="Fraction of inference requests answered with a 500 (spread evenly).", min=0, max=1
        ),
    ] = 0.0,
    fail_status: Annotated[
        int,
        typer.Option(
            help="Status of injected failures (503: Ollama's 'server busy', 429: rate limit).",
            min=400,
            max=599,
        ),
    ] = 500,
    answer_tokens: Annotated[
        int, typer.Option(help="Length of an answer that nothing cuts short.", min=1)
    ] = 12,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require 'Authorization: Bearer <key>' on API requests (401 otherwise).", show_default=False
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Server log level (warning, info, debug).")] = "warning",
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve https with this PEM certificate chain (and --tls-key).", show_default=False),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The PEM private key of --tls-cert.", show_default=False)
    ] = None,
) -> None:
    """Serve a fast, deterministic fake Ollama / OpenAI-compatible backend for tests and demos.

    Answers are word sequences derived from the prompt; options.num_predict / max_tokens cut them
    ("length"). A chat request with tools calls every tool whose name the last user message mentions.
    Control routes: GET /_sim/stats, POST /_sim/reset, GET|POST /_sim/config. Stops on SIGTERM/SIGINT.
    """
    from ollamaflow.sim import SimConfig, serve
    from shared.errors import ConfigError

    if format not in ("ollama", "openai"):
        raise typer.BadParameter("must be 'ollama' or 'openai'", param_hint="--format")
    if dialect not in ("", "vllm"):
        raise typer.BadParameter("must be 'vllm' or empty", param_hint="--dialect")
    try:
        config = SimConfig(
            host=host,
            port=port,
            format=format,  # type: ignore[arg-type]
            dialect=dialect,  # type: ignore[arg-type]
            models=tuple(name for name in (part.strip() for part in models.split(",")) if name),
            tokens_per_second=tokens_per_second,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            fail_status=fail_status,
            answer_tokens=answer_tokens,
            log_level=log_level,
            api_key=api_key or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
    except ConfigError as exc:
        raise typer.BadParameter(exc.message) from None
    try:
        serve(config)
    except OSError as exc:
        typer.echo(f"ollamaflow sim: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
