"""`keysvc publish`: the discovery document and JWKS written to a directory or bucket, so a web
server, bucket or CDN answers the clouds' fetches at any scale, even while keysvc is down."""
