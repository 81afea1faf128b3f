"""Block-sparse compression of CNN feature maps: the notebook-facing API on one screen.

A ResNet-18 is split after an early stage; its feature map is cut into BxB blocks, the
highest-energy blocks are kept (channel-wise, region-wise or global selection), quantized
and entropy-coded into a real bitstream; the rest of the network classifies what the decoder
returns. The internals live in the package ``blocksparse`` (one module per concern, imports
only downward); this module re-exports what notebooks and tests use::

    import blocksparse_utils as bsu
    x, label = bsu.load_dataset("fashion-mnist", "test", subset=1).tensors   # one 28x28 grayscale image
    model = bsu.load_pretrained("fashion-mnist", split_at="layer3", weights=...)  # e.g. the answer's model
    codebook = bsu.load_codebook(...)               # its code tables, paid once (amortized streams)
    blob = bsu.encode(model.head(x), codebook)      # bytes
    z_hat = bsu.decode(blob, codebook)              # == bsu.compress(model.head(x), codebook.cfg)
    predicted = model.tail(z_hat).argmax(1)
    bsu.rate(blob, (28, 28), codebook)["bpp"]       # 8 x bytes / input pixels (bsu.bpp)

The README's example runs this with the answer's layer3 model (``tests/test_readme_python.py``).

``python blocksparse_utils.py --help`` runs the command line (``blocksparse.cli``).
"""
from __future__ import annotations

from pathlib import Path

# codec: configuration, partition, energy, selection, quantization
from blocksparse.codec import (MODES, RATIOS, CodecConfig, block_energy, compress, compress_ste,
                               kept_per_group, distinct_configs, partition, pixel_mask, select_blocks)
# streams: self-contained (cfg) or amortized with fitted code tables (Codebook), Huffman or ANS
from blocksparse.bitstream import bpp, inspect_stream
from blocksparse.limits import section_limits
from blocksparse.codebook import (Codebook, codebook_bytes, decode, encode, encode_batch, fit_codebook,
                                  load_codebook, rate, save_codebook)
from blocksparse.entropy import huffman_lengths
# model and data
from blocksparse.data import SPLITS, VAL_SIZE, load_dataset
from blocksparse.model import (SPLIT_POINTS, SplitResNet18, build_model, checkpoint_card, checkpoint_path,
                               load_pretrained)
# training and evaluation
from blocksparse.training import Budget, accuracy, finetune, predict, pretrain
from blocksparse.evaluation import evaluate, head_features, result_row
from blocksparse.baselines import image_codec_baseline
from blocksparse.original import original_accounting
from blocksparse.bottleneck import Bottleneck, load_bottleneck, save_bottleneck
from blocksparse.bottleneck_training import bottleneck_row, evaluate_bottleneck, train_bottleneck
# results, analysis, the sweep's grid and selection
from blocksparse.results import SCHEMA, load_config, load_results, save_results, to_frame, write_compression_results
from blocksparse.analysis import best_under, lowest_within, pareto, wilson_interval
from blocksparse.study import PRESETS, candidates_under, select_after_finetuning, split_sweep, sweep
from blocksparse.cache import cached
# the record: the protocol's one training budget and its answer (answer.py)
from blocksparse.protocol import BUDGET
from blocksparse.answer import answer_table, read_cards
from blocksparse.analysis import bd_rate_table
# plots and widgets
from blocksparse.plots import (pick_row, plot_accuracy_vs_bpp, plot_accuracy_vs_ratio, plot_explorer, plot_feature_maps,
                              plot_split_points, save_figure)
from blocksparse.widgets import controls, interactive_figure
from blocksparse.runtime import (DATA_DIR, NOTEBOOK_DIR, ROOT, default_device, figures_dir, results_dir,
                                 set_seed)


def repo_path(*parts: str) -> Path:
    """A path inside the repository (notebooks build every path from here, from any working directory)."""
    return ROOT.joinpath(*parts)


if __name__ == "__main__":
    from blocksparse.cli import main
    main()
