"""Wire types of the client APIs (Ollama and OpenAI) and the reports data planes publish."""
