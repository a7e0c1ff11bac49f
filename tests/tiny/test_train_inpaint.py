"""The inpainting trainer's pieces: its start from the generate denoiser, its masks and its condition channels."""

from typing import Any

import numpy as np
import torch

from tools.tiny import data, train, train_inpaint


def test_the_inpainting_denoiser_starts_as_the_generate_one() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base: Any = train.make_unet()
    inpaint: Any = train_inpaint.inpaint_unet_from(base)
    assert inpaint.config.in_channels == 9
    latents, text = torch.randn(2, 4, 16, 16), torch.randn(2, 8, train.TEXT_DIM)
    extra = torch.randn(2, 5, 16, 16)  # whatever the mask and picture say, the new channels weigh nothing yet
    with torch.no_grad():
        before = base(latents, 10, text).sample
        after = inpaint(torch.cat([latents, extra], dim=1), 10, text).sample
    assert torch.allclose(before, after, atol=1e-5)


def test_masks_are_the_tools_shapes() -> None:
    rng = np.random.default_rng(3)
    seen = 0
    for _ in range(200):
        scene = data.sample_scene(rng)
        mask = train_inpaint.random_mask(rng, scene)
        assert mask.shape == (data.SIZE, data.SIZE) and set(np.unique(mask)) <= {0.0, 1.0}
        seen += bool(mask.any())
    assert seen == 200  # every example paints something
    # The cells covering a shape contain its whole bounding box.
    shape = data.Shape("circle", "red", "large", 0.3, 0.5, 0.26)
    cover = train_inpaint._cells_mask(train_inpaint._cover_cells(shape))
    lo, hi = int((0.3 - 0.26) * 64), int((0.3 + 0.26) * 64)
    assert cover[32, lo:hi].all()


def test_condition_channels_are_the_pipelines() -> None:
    torch.set_num_threads(1)
    vae: Any = train.make_vae().eval()
    encoded = train_inpaint.encode_inpaint(vae, np.random.default_rng(0), 4)
    assert encoded.condition is not None and encoded.condition.shape == (4, 5, 16, 16)
    mask = encoded.condition[:, :1]
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}  # nearest-neighbour, as the pipeline resizes it
