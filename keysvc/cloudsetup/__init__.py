"""Cloud-side trust configuration for keysvc tokens, generated as Terraform.

Pure functions from a `SetupRequest` to a Terraform `Document`: no I/O, so the CLI (and tests)
decide where input comes from and output goes.
"""

from keysvc.cloudsetup.request import SetupError, SetupRequest, SetupResult

__all__ = ["SetupError", "SetupRequest", "SetupResult"]
