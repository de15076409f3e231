"""`counterpoint eval`: measure accuracy and hallucination per decoding method through the server's own API.

readers (task files -> items) -> runner (requests per method) -> scoring (per item) -> report (table, JSON).
"""
