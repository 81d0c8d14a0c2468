"""Translation between the Ollama and OpenAI API formats, both ways, streaming included.

Pure: every function and translator here takes bytes (and the time, and an id source) and returns
bytes; none reads a clock, a socket or a file. The routes pick the pair of formats and do the I/O.

- ``framing``: incremental NDJSON/SSE decoders and encoders (sans-IO ``feed``/``close``).
- ``errors``: ``Untranslatable`` and error bodies carried between the formats.
- ``common``: the translated ``BackendCall``, ``LocalReply``, ids and timestamps.
- ``ollama_to_openai``: Ollama clients' requests for OpenAI backends; ``openai_replies`` brings
  those backends' replies (whole or streamed) back to the Ollama client.
- ``openai_to_ollama``: OpenAI clients' requests for Ollama backends; ``ollama_replies`` brings
  the native replies back to the OpenAI client.
- ``embeddings``, ``models``: embedding replies and model lists both ways.
"""
