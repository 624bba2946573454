"""Offline evaluation with the ChatIR / PlugIR / DAR protocol (``manage.py evaluate``).

``protocol`` holds the pure metric functions; ``corpus`` puts a search corpus into a catalog;
``queries`` builds the per-round query vectors of each mode; ``runner`` ties them together and
ranks every query with ``retrieval.turn.ranking`` (the live search's code path); ``plot`` draws
Hits@10 per round. Only ``runner`` and ``queries`` load models, and only when called.
"""
