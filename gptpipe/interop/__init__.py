"""GPT-2 interoperability: OpenAI's and Hugging Face's checkpoint layouts, vocabularies, export."""
