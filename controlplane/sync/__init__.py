"""Model synchronisation: pulling each frontend's RequiredModels onto its Ollama backends."""
