"""keysvc: a signing service for dynamic provider credentials.

The service signs short-lived OIDC tokens for Terraform runs through pluggable key backends and
publishes every key version in a JWKS, so keys rotate without a single failed verification.
"""

__version__ = "0.1.0"
