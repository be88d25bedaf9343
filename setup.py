"""Build glue for the native chunker extension (everything else is in pyproject.toml)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vtstore.chunking._cdc",
            sources=["src/vtstore/chunking/_cdc.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
)
