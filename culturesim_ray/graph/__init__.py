"""Item graphs the GNN branches run on."""
