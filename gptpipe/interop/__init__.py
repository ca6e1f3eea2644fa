"""GPT-2 interoperability: OpenAI's and Hugging Face's checkpoint formats, vocabularies, export."""
