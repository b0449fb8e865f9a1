"""The backend contract run for every built-in backend.

keysvc.testing.backend_contract holds the backend-level checks (the part a third-party backend
runs too); tests/contract/service.py the service-level ones (tokens verified against the JWKS
the service served, rotation, faults, a backend down at start). Each backend's test directory
has a test_contract.py that describes its backend as a subject and runs both; memory and file,
which need no server, have theirs here.
"""
