"""One conversational search turn: everything from a shopper's message to its ranked products.

One file per question a reader asks:

- ``submit``      a message, a filter click or a like comes in (web side); the turn is stored and
                  its two tasks are sent
- ``admission``   under load: a bounded line, a turn's place in it, ``busy`` beyond
- ``filters``     what the shopper said or clicked about price, brand, category, availability
- ``tasks``       the Celery tasks (thin): ``interactive.turn_text``, ``gpu.run_turn``, the sweep
- ``text_stage``  first results: the dialogue text ranked at once (interactive worker)
- ``pipeline``    the rest, on the gpu worker: refine, generate, rank, ask
- ``ranking``     DAR's score fusion, feedback, product text: the one ranking function
- ``previews``    the generated previews' files; ``asking`` the clarifying question's thread
- ``store``       every statement on turns, results, previews and feedback (the attempt fence)
- ``payloads``    every event and JSON shape the page and the REST API see
- ``sweep``       turns that outlived their time limit are failed

One turn's path::

    page ─ws/REST─> submit.submit_message ── store.create_turn ──> (commit) ──┐
                      payloads.accepted_events ──> page                         │ send both tasks
        ┌───────────────────────────────────────────────────────────────────────┴─────┐
        v interactive queue                                        gpu queue          v
    tasks.turn_text                                              tasks.run_turn
    text_stage.run_text_stage                                    store.claim (attempt n)
      ranking.rank(dialogue text)                                pipeline: refine (LLM)
      store.store_provisional ──> "results" (final: false)         ──> "query.refined"
                                                                   generate (diffusion)
                                                                   ranking.rank(fused query)
                                                                   store.store_final ──> "previews",
                                                                     "results" (final: true)
                                                                   asking (LLM) ──> "question",
                                                                     "turn.done"

Models come from ``workers.models.registry`` and are imported inside functions only: the web
process imports this package without torch.
"""
