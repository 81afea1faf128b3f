"""Block-sparse compression of CNN feature maps (package internals; notebooks import blocksparse_utils)."""
