"""Shipped configurations (installed as the ``maskgate.configs`` package)."""
