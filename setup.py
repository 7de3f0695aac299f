"""sdict_jax: SDict-VLM, a vision-language model mixed by spectral dictionaries."""

import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements():
  lines = (_HERE / "requirements.txt").read_text().splitlines()
  return [line.split("#")[0].strip() for line in lines
          if line.split("#")[0].strip()]


setuptools.setup(
    name="sdict_jax",
    version="0.1.0",
    description="SDict-VLM in JAX/Flax: spectral dictionary token mixing, no "
                "convolutions and no self-attention.",
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["sdict_jax", "sdict_jax.*"]),
    python_requires=">=3.10",
    install_requires=_requirements(),
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10",
                             "nbformat>=5.10", "ipykernel>=6"]},
)
