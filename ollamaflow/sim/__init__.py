"""A fast, faithful Ollama / OpenAI-compatible backend simulator for tests, benchmarks and the demo.

    from ollamaflow.sim import SimConfig, running_sim

    async with running_sim(SimConfig(format="openai", tokens_per_second=50)) as url:
        ...  # point ollama.AsyncClient(host=url) or openai.AsyncOpenAI(base_url=url + "/v1") at it

``create_app(config)`` gives the raw ASGI app, ``serve(config)`` runs it until SIGTERM/SIGINT
(``ollamaflow sim``). Control routes: ``GET /_sim/stats``, ``POST /_sim/reset``,
``GET|POST /_sim/config``.
"""

from ollamaflow.sim.app import SimApp, create_app
from ollamaflow.sim.config import DEFAULT_MODELS, Knobs, SimConfig
from ollamaflow.sim.server import running_sim, serve

__all__ = ["DEFAULT_MODELS", "Knobs", "SimApp", "SimConfig", "create_app", "running_sim", "serve"]
