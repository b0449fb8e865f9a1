"""OTF's runner endpoint, served by keysvc so a real OTF's runners get their tokens from it.

otf-agent and the Kubernetes executor's job pods ask otfd for a dynamic-credentials token with
`POST /otfapi/jobs/{job_id}/dynamic-credentials` and their job token. Routed to keysvc instead
(deploy/nginx/), the request is authenticated through otfd itself, never with otfd's secret:

- job_token.py  the look at the job token keysvc can do alone (its `sub` and `exp`), before
                anything is sent to otfd
- otfd.py       the client of otfd's API: the job and its workspace, read with the caller's
                own job token (otfd checks the signature and OTF's authorization rules)
- workspace_cache.py  a job's workspace lookup, reused for the same job's next tokens
- jsonapi.py    OTF's JSON:API documents: reading a resource, writing an error
- endpoint.py   the handler: the checks in order, then the token /v1/tokens would mint

docs/otf.md says what was read in OTF's source and how each part follows it.
"""

PATH = "/otfapi/jobs/{job_id}/dynamic-credentials"
