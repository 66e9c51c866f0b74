"""Benchmarks of flask_tiered_state against the raw clients (redis-py, psycopg,
SQLAlchemy Core, boto3 on moto), printed as one Markdown table of ratios.

Run ``python -m bench`` (``make bench``), ``python -m bench --quick`` for a fast
pass, ``python -m bench --only batch`` for a group, ``--list`` for the names.
"""
