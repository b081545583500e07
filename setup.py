"""tts: compute-optimal test-time scaling of language models in JAX/Flax."""
import setuptools

setuptools.setup(
    name="tts",
    version="0.1.0",
    description="Compute-optimal test-time scaling (Snell et al. 2024) in JAX/Flax.",
    packages=setuptools.find_packages(include=["tts", "tts.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "seqio>=0.0.19",
        "ml_collections>=1.0",
        "numpy>=1.26",
        "math-verify>=0.7",
        "matplotlib>=3.8",
        "tqdm>=4.66",
    ],
    extras_require={
        "test": ["pytest>=8"],
        "hf": ["safetensors>=0.4", "tokenizers>=0.19", "torch==2.13.0", "transformers>=4.45"],
    },
    entry_points={"console_scripts": ["tts=tts.cli:main"]},
)
