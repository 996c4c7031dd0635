"""Ray glue: the only package that imports ray (Data, Train, Serve)."""
