"""Pure math: similarity functions, the blockwise all-pairs kernel, FAISS pre-filtering."""
