"""Block-sparse compression of CNN feature maps: the package behind ``blocksparse_utils``.

``MODULES`` is the layering: each module imports only modules listed before it (a test reads
every import and holds the package to it), and no private name crosses a module boundary.
Leaves (``runtime``, ``stats``, ``codec``, ``entropy``, ``priors``), then the streams
(``bitstream`` self-contained; ``codetables`` and ``codebook`` amortized), the data, model and
training (its ``Budget``), the protocol and its runs, evaluation, baselines and the learned bottleneck, analysis and
the report, the study, plots and widgets, and the command line last.

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

MODULES = ("runtime", "stats", "codec", "entropy", "priors", "bitstream", "codetables", "codebook", "data",
           "results", "model", "training", "protocol", "walk", "power", "comparison", "evaluation", "limits", "baselines", "original",
           "bottleneck", "student", "bottleneck_training", "recipes", "costs", "analysis", "answer", "report", "cache", "study",
           "protocol_runs", "protocol_v2_runs", "protocol_v2_screens", "protocol_v2", "report_v2", "plots", "widgets", "notebook_runner", "bench", "cli_sweep", "cli_protocol", "cli")
