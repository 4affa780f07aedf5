"""Wire shapes: every request body, query and response of the HTTP contract, declared once.

``declare`` is the vocabulary (a field kind carries its limits, which msgspec
checks and the schema states, and the message a refusal shows); ``shapes``
holds the declarations. The HTTP edge decodes into them (relay.http.parse) and
the OpenAPI document is generated from them (relay.http.openapi), so the two
cannot disagree (ADR 0029).
"""
