"""Translation between the Ollama and OpenAI API formats, both ways, streaming included.

Pure: every function and translator here takes bytes (and the time, and an id source) and returns
bytes; none reads a clock, a socket or a file. The routes pick the pair of formats and do the I/O.

- ``framing``: incremental NDJSON/SSE decoders and encoders (sans-IO ``feed``/``close``).
- ``errors``: ``Untranslatable`` and error bodies carried between the formats.
- ``common``: the translated ``BackendCall``, ``LocalReply``, ids and timestamps.
- ``ollama_on_openai``: Ollama clients on OpenAI-compatible backends: the request, the whole reply
  and the stream, one module per pair of formats.
- ``openai_on_ollama``: OpenAI clients on Ollama backends, likewise.
- ``embeddings``, ``models``: embedding replies and model lists both ways.
- ``exchanges``: which of these a proxied request needs, as one object per client endpoint and
  backend format.
"""
