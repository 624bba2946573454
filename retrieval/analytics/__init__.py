"""Read-only analytics over search sessions: who may see what, dashboard figures and charts.

Used by the admin (retrieval/admin.py); nothing here imports the model layer or torch.
"""
