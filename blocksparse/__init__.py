"""Block-sparse compression of CNN feature maps: the package behind ``blocksparse_utils``.

Modules, each importing only those above it in this list:
``runtime`` (paths, seeds, device) - ``codec`` (config, partition, energy, selection,
quantization) - ``entropy`` (Huffman, bit packing) - ``bitstream`` (self-contained streams) -
``codebook`` (amortized streams, Huffman or ANS) - ``data`` - ``model`` - ``training`` -
``evaluation`` - ``baselines`` (image codecs), ``original`` (the original's accounting),
``bottleneck`` (learned anchor) - ``results`` (schema), ``analysis``, ``report`` (its parts: ``report_format``,
``report_original``, ``report_models``, ``report_answer``), ``cache`` -
``study`` (grid, selection, frontier models) - ``plots``, ``widgets`` - ``cli``.

One name per concept, the same in code, results columns, notebooks and plot axes:

``block_size``  side B of the BxB blocks        ``ratio``    fraction of blocks kept per group
``mode``        channel-wise / region-wise / global selection
``bits``        quantizer depth of kept values  ``quality``  an image codec's quality setting
``bpp``         bits per input pixel of real per-image streams (amortized; ``bpp_self_contained``)
``coder``       huffman or ans                  ``seed``     RNG seed only
``split_at``    the stage the codec follows     ``n_images`` evaluated images (``n_examples``: shown)
``original``    the original study's method (``method="original-accounting"``)
Units sit in column names: ``*_bits`` and ``*_bytes`` are per image stream.
"""
