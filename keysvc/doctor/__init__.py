"""`keysvc doctor`: check from the outside what the clouds will check.

Issuer checks fetch the discovery document and JWKS over the network as a verifier would; trust
checks evaluate a cloud's trust configuration (AWS trust policy, Azure federated credential, GCP
attribute condition) against the token keysvc would issue for one run. Everything yields
`Finding`s; the CLI renders them and turns failures into the exit status.
"""
