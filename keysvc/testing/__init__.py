"""Test support that ships with keysvc, for the authors of backends that plug into it.

`keysvc.testing.backend_contract` is the contract every key backend passes (the built-in ones in
keysvc's own tests, a third-party one in its package's tests). It needs no test framework and
imports nothing keysvc does not already depend on.
"""
