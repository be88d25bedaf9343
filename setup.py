"""Build glue for the native extensions (everything else is in pyproject.toml).

The BLAKE3 extension builds with the compiler's default target: its AVX2 and
AVX-512 code is in functions marked __attribute__((target(...))) and chosen at
import time from what the CPU supports, so one build runs on any x86-64.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vtstore.chunking._cdc",
            sources=["src/vtstore/chunking/_cdc.c"],
            depends=["src/vtstore/_vtbuf.h", "src/vtstore/chunking/_tarscan.h"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension(
            "vtstore.tree._treecodec",
            sources=["src/vtstore/tree/_treecodec.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension(
            "vtstore._blake3",
            sources=["src/vtstore/_blake3.c"],
            depends=["src/vtstore/_vtbuf.h", "src/vtstore/_vtimpl.h"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        ),
        Extension(
            "vtstore.stores._vtdio",
            sources=["src/vtstore/stores/_vtdio.c"],
            depends=["src/vtstore/_vtbuf.h", "src/vtstore/_vtimpl.h"],
            libraries=["m"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        ),
        # batched datadir reads (DataDir.get_many): coalesced preadv and BLAKE3
        # checks without the GIL; compiles in _blake3.c for its batch hashing
        Extension(
            "vtstore.stores._vtdread",
            sources=["src/vtstore/stores/_vtdread.c"],
            depends=["src/vtstore/_blake3.c", "src/vtstore/_vtbuf.h", "src/vtstore/_vtimpl.h"],
            libraries=["pthread"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
        ),
        # batch AES-256-GCM for encrypted stores, over the system's libcrypto
        # (Debian: libssl-dev), or its own VAES AES-GCM (_gcm512.h, opt-in with
        # VT_CRYPT_GCM=vaes512 on CPUs with AVX-512 VAES); compiles in _blake3.c to check
        # what it decrypts in the same pass.  Optional: without it the crypt store uses the
        # `cryptography` package, slower per block, same bytes.
        Extension(
            "vtstore.stores.crypt._cryptblocks",
            sources=["src/vtstore/stores/crypt/_cryptblocks.c"],
            depends=[
                "src/vtstore/_blake3.c",
                "src/vtstore/_vtbuf.h",
                "src/vtstore/_vtimpl.h",
                "src/vtstore/stores/crypt/_blake2b.h",
                "src/vtstore/stores/crypt/_gcm512.h",
            ],
            libraries=["crypto", "pthread"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra"],
            optional=True,
        ),
    ]
)
