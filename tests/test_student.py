"""student: the Entropic Student's bottleneck codes real bytes, decodes exactly what the coded
path feeds the tail, survives its file, and refuses bad input."""
import json

import pytest
import torch

from blocksparse.student import StudentBottleneck, load_student, save_student


@pytest.fixture(scope="module")
def bn():
    torch.manual_seed(0)
    b = StudentBottleneck(in_channels=32, latent_channels=4, hidden=16, stride=2)
    with torch.no_grad():  # a density wider than the untrained one, so symbols vary
        b.encoder[-1].weight.mul_(20)
    return b.update().eval()


def _z(seed=1, n=3, h=7, w=7):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, 32, h, w, generator=g))


def test_streams_decode_to_the_rounded_latents_through_the_decoder(bn):
    z = _z()
    streams = bn.encode_batch(z)
    assert len(streams) == 3 and all(isinstance(s, bytes) and len(s) > 0 for s in streams)
    # independent path: round each latent around its channel's median, as the coder must
    y = bn.encoder(z)
    med = bn.entropy._get_medians().detach()
    y_hat = torch.round(y - med) + med
    expected = torch.relu(bn.decoder(y_hat)[..., :7, :7])
    assert torch.allclose(bn.decode_batch(streams, z.shape[1:]), expected, atol=1e-5)
    # each image's stream is its own: coding one image alone gives the same bytes
    assert bn.encode_batch(z[1:2])[0] == streams[1]


def test_more_varied_latents_cost_more_bytes(bn):
    flat = torch.zeros(1, 32, 7, 7)
    assert len(bn.encode_batch(flat)[0]) < len(bn.encode_batch(_z(2, 1) * 10)[0])


def test_training_mode_adds_noise_for_the_rate_and_shows_the_tail_rounded_latents(bn):
    bn.train()
    try:
        z = _z(3, 2)
        seen, lik = bn(z, quantization="mixed")
        bn.eval()
        coded, _ = bn(z)
        assert torch.allclose(seen, coded, atol=1e-5)  # mixed: the tail sees what the decoder returns
        assert ((lik > 0) & (lik <= 1)).all()
    finally:
        bn.eval()


def test_file_round_trip_gives_the_same_streams_and_a_tampered_file_is_refused(tmp_path, bn):
    z = _z(4)
    p = tmp_path / "s.pt"
    save_student(bn, p, lmbda=0.8)
    again = load_student(p)
    assert again.encode_batch(z) == bn.encode_batch(z)
    card = json.loads(p.with_suffix(".json").read_text())
    assert card["architecture"] == dict(in_channels=32, latent_channels=4, hidden=16, stride=2) and card["lmbda"] == 0.8
    p.write_bytes(p.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="sha256"):
        load_student(p)
    with pytest.raises(ValueError, match="no student bottleneck"):
        load_student(tmp_path / "none.pt")


def test_bad_arguments_name_themselves(bn):
    with pytest.raises(ValueError, match="stride"):
        StudentBottleneck(32, 4, 16, 3)
    with pytest.raises(ValueError, match="latent_channels"):
        StudentBottleneck(32, 0, 16, 2)
    with pytest.raises(ValueError, match="z must be features"):
        bn.encode_batch(torch.zeros(1, 8, 7, 7))
    with pytest.raises(ValueError, match="quantization"):
        bn(_z(), quantization="exact")
    with pytest.raises(ValueError, match="streams"):
        bn.decode_batch("abc", (32, 7, 7))


def test_importing_the_package_for_a_notebook_does_not_import_compressai():
    """CompressAI (and its torch-geometric) in a Jupyter kernel hung notebook 07's widget cell: the
    modules notebooks import must leave it out until a student is built."""
    import subprocess
    import sys
    code = ("import sys, blocksparse_utils, blocksparse.protocol_v2, blocksparse.recipes; "
            "print('compressai' in sys.modules, 'torch_geometric' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
