"""Model bundles shipped with maskgate (installed as the ``maskgate.models`` package)."""
