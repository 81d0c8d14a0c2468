"""OllamaFlow tools: the CLI, the local cluster supervisor, embedded servers, simulator and benchmark."""
