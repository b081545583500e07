"""Hugging Face interop: local safetensors checkpoints (Llama, Qwen2) in and out."""
