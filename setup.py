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
        "tensorflow>=2.16",  # seqio's tf.data pipelines (the data stage); not on a hot path
        "tensorboard>=2.16",  # event files of the trainers' scalars (written without TF)
        "ml_collections>=1.0",
        "numpy>=1.26",
        "math-verify>=0.7",
        "matplotlib>=3.8",
        "tqdm>=4.66",
    ],
    extras_require={
        # Hugging Face checkpoints: import, export, tokenizers, chat templates (transformers,
        # without torch: torch would clash with a serving stack's own).
        "hf": ["safetensors>=0.4", "tokenizers>=0.19", "transformers>=4.45"],
        # The tests compare with transformers on CPU (torch pinned to the CI's local wheel).
        "test": ["pytest>=8", "torch==2.13.0", "transformers>=4.45"],
        # The jax build for the accelerator: `pip install -e '.[tpu]'` on a Cloud TPU VM,
        # '.[gpu]' on NVIDIA GPUs (CUDA 12; jax[cuda13] for CUDA 13 drivers).
        "tpu": ["jax[tpu]>=0.10.2"],
        "gpu": ["jax[cuda12]>=0.10.2"],
    },
    entry_points={"console_scripts": ["tts=tts.cli:main"]},
)
