"""The customer console: pages rendered on the server (aiohttp-jinja2, autoescaped), plain
forms, one vendored stylesheet, no inline script, CSP `default-src 'self'` (docs/console.md).

Its views call the same service functions as the JSON API, never SQL of their own. Members
sign in with a one-time link (`metrux control login-link`) or through the identity
provider, and carry the same session cookie and CSRF token as the JSON API's handoff.
"""
