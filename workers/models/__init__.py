"""Model backends for DAR search (encoders, refiner LLM, image generator).

Free of Django. torch and the ML libraries are imported only inside the functions that load or run
a model, so importing this package (or ``registry``/``config``) stays cheap for the web process.
"""
