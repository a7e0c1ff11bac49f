"""The training script's pieces that need no trained weights: model sizes, the edit UNet's start, options."""

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tools.tiny import data, phrasing, train

# mypy resolves diffusers' top-level names (AutoencoderKL, UNet2DConditionModel, the schedulers) to its dummy
# placeholder classes, which its __init__ imports first for when torch is missing; so the diffusers objects the
# training script builds are held here as Any, where the tests read their attributes or call them.


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def test_models_have_the_planned_sizes() -> None:
    tokenizer = train.make_tokenizer()
    vae: Any = train.make_vae()
    unet: Any = train.make_unet()
    assert 0.6e6 < train.parameter_count(vae) < 0.8e6
    assert 3.8e6 < train.parameter_count(unet) < 4.5e6
    assert 0.2e6 < train.parameter_count(train.make_text_encoder(tokenizer)) < 0.4e6


def test_captions_fit_the_token_window() -> None:
    tokenizer = train.make_tokenizer()
    rng = np.random.default_rng(0)
    captions = [phrasing.describe(rng, data.sample_scene(rng)) for _ in range(2000)]
    edits = [phrasing.instruct(rng, data.sample_edit(rng)) for _ in range(500)]
    longest = max(len(tokenizer(text).input_ids) for text in captions + edits)
    assert longest <= train.MAX_TOKENS


@torch.no_grad()
def test_edit_unet_starts_as_the_text_to_image_unet() -> None:
    torch.manual_seed(0)
    unet: Any = train.make_unet()
    edit: Any = train.edit_unet_from(unet)
    assert edit.config.in_channels == 8
    latents, text = torch.randn(2, 4, 16, 16), torch.randn(2, 7, train.TEXT_DIM)
    picture = torch.randn(2, 4, 16, 16)
    t = torch.tensor([10, 500])
    expected = unet(latents, t, text).sample
    assert torch.allclose(edit(torch.cat([latents, picture], 1), t, text).sample, expected, atol=1e-5)


@pytest.mark.parametrize("zero_snr", [True, False])
def test_min_snr_weights_cap_the_easy_timesteps(zero_snr: bool) -> None:
    weights = train.min_snr_weights(train.make_noise_scheduler(zero_snr), torch.tensor([0, 100, 999]))
    assert weights[0] < 0.1 and weights[-1] == pytest.approx(1.0)
    assert bool(((weights > 0) & (weights <= 1)).all())


def test_snr_floor_keeps_the_clean_latent_weighted_at_the_noisiest_steps() -> None:
    scheduler: Any = train.make_noise_scheduler(zero_snr=False)
    t = torch.tensor([100, 999])
    plain, floored = train.min_snr_weights(scheduler, t), train.min_snr_weights(scheduler, t, floor=0.2)
    assert float(floored[0]) == pytest.approx(float(plain[0])), "easy steps are unchanged"
    snr = scheduler.alphas_cumprod[999] / (1 - scheduler.alphas_cumprod[999])
    # Weight times SNR is the weight of the clean latent's error: min-SNR lets it vanish, the floor keeps 0.2.
    assert float(plain[1] * snr) < 0.01 and float(floored[1] * snr) == pytest.approx(0.2)


def test_v_prediction_weights_keep_the_noisiest_steps() -> None:
    """Where only the prompt can decide the background, the floored weight must not vanish."""
    scheduler = train.make_noise_scheduler(zero_snr=True)
    weights = train.min_snr_weights(scheduler, torch.arange(900, 1000))
    assert float(weights.min()) >= 0.5


def test_zero_snr_schedule_leaves_nothing_of_the_picture_at_the_last_step() -> None:
    plain: Any = train.make_noise_scheduler(zero_snr=False)
    zero: Any = train.make_noise_scheduler(zero_snr=True)
    # The leak: on 16x16 latents the mean of unit noise spreads only 1/16, less than this trace.
    assert float(plain.alphas_cumprod[-1].sqrt()) > 1 / 16
    assert float(zero.alphas_cumprod[-1]) < 1e-6 and zero.config.prediction_type == "v_prediction"
    sampler: Any = train.make_sampler(zero_snr=True)
    sampler.set_timesteps(20)
    assert int(sampler.timesteps[0]) == 999, "sampling starts from pure noise"
    assert sampler.config.prediction_type == "v_prediction"


def test_v_prediction_loss_is_zero_for_the_exact_velocity() -> None:
    scheduler: Any = train.make_noise_scheduler(zero_snr=True)
    latents = torch.randn(3, 4, 16, 16)

    class Oracle(torch.nn.Module):
        """Answers with the true velocity, recovered from the noisy input for the seeded noise."""

        def forward(self, noisy: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> object:
            alpha = scheduler.alphas_cumprod[t].sqrt()[:, None, None, None]
            sigma = (1 - scheduler.alphas_cumprod[t]).sqrt()[:, None, None, None]
            noise = (noisy - alpha * latents) / sigma
            return type("Out", (), {"sample": alpha * noise - sigma * latents})()

    torch.manual_seed(0)
    oracle: Any = Oracle()  # a stand-in denoiser: it answers as the UNet does, with a `.sample`
    loss = train.denoise_loss(oracle, scheduler, latents, torch.zeros(3, 1, train.TEXT_DIM))
    assert float(loss) < 1e-6


def test_shape_weights_cover_the_shapes_and_their_outline() -> None:
    background = torch.tensor([0.3, -1.0, 0.5, 0.0])[None, :, None, None].expand(2, 4, 16, 16).clone()
    result, picture = background.clone(), background.clone()
    result[0, 1, 4:7, 4:7] += 2.0  # a shape in the result
    picture[0, 2, 10:12, 12:14] -= 2.0  # another where the picture had one (an edit moved it)
    assert train.shape_weights(0.0, result, picture) is None, "off: a plain loss"
    weights = train.shape_weights(3.0, result, picture)
    assert weights is not None and weights.shape == (2, 1, 16, 16)
    assert float(weights[1].max()) == 1.0, "a blank latent is all background"
    marked = weights[0, 0] == 4.0
    assert bool(marked[3:8, 3:8].all()) and bool(marked[9:13, 11:15].all())
    assert int(marked.sum()) == 25 + 16 and float(weights[0, 0][~marked].max()) == 1.0


def test_shape_weighted_loss_counts_the_shape_cells_more() -> None:
    scheduler = train.make_noise_scheduler(zero_snr=False)
    latents = torch.zeros(1, 4, 16, 16)
    weights = torch.ones(1, 1, 16, 16)
    weights[..., :8] = 3.0

    class LeftWrong(torch.nn.Module):
        def forward(self, noisy: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> object:
            out = torch.zeros_like(noisy)
            out[..., :8] = 1.0
            return type("Out", (), {"sample": out})()

    text = torch.zeros(1, 1, train.TEXT_DIM)
    torch.manual_seed(0)
    wrong: Any = LeftWrong()  # a stand-in denoiser: it answers as the UNet does, with a `.sample`
    plain = train.denoise_loss(wrong, scheduler, latents, text)
    torch.manual_seed(0)
    weighted = train.denoise_loss(wrong, scheduler, latents, text, weights=weights)
    # Same noise both times: the error sits where the weights are 3 for half its cells and 1 elsewhere.
    assert float(weighted) > 1.5 * float(plain)


def test_crops_and_batches_are_deterministic() -> None:
    a = train.crop_batch(np.random.default_rng(3), 4)
    b = train.crop_batch(np.random.default_rng(3), 4)
    assert a.shape == (4, 3, train.VAE_CROP, train.VAE_CROP) and torch.equal(a, b)
    assert float(a.min()) >= -1.0 and float(a.max()) <= 1.0


def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--minutes", "0"])
    assert "--minutes" in capsys.readouterr().err
    options = train.parse_args(["--part", "vae", "--minutes", "2", "--out", "/tmp/x"])
    assert options.work == options.out / "train-state" and options.part == "vae"
    assert not options.zero_snr and train.parse_args(["--zero-snr"]).zero_snr
    for bad in (["--batch", "0"], ["--batch", "128", "--pool", "64"], ["--lr", "-1"]):
        with pytest.raises(SystemExit):
            train.parse_args(bad)
        assert "--batch" in capsys.readouterr().err


def test_batch_and_lr_override_the_part_settings() -> None:
    default = train.parse_args([])
    assert train.batch_size(default, "unet") == train.SETTINGS["unet"].batch
    tuned = train.parse_args(["--batch", "32", "--lr", "1e-3"])
    assert train.batch_size(tuned, "unet") == 32
    after_warmup = train.Progress(step=train.SETTINGS["unet"].warmup)
    assert train.learning_rate(tuned, "unet", after_warmup) == pytest.approx(1e-3)
    assert train.learning_rate(default, "unet", after_warmup) == pytest.approx(train.SETTINGS["unet"].lr)
    assert (
        default.edit_text_drop == 0.05 and train.parse_args(["--edit-text-drop", "0.3"]).edit_text_drop == 0.3
    )
    with pytest.raises(SystemExit):
        train.parse_args(["--edit-text-drop", "0.9"])
    assert default.shape_weight == 0.0 and train.parse_args(["--shape-weight", "4"]).shape_weight == 4.0
    assert default.snr_floor == 0.0 and train.parse_args(["--snr-floor", "0.2"]).snr_floor == 0.2
    for bad in (["--shape-weight", "-1"], ["--snr-floor", "9"]):
        with pytest.raises(SystemExit):
            train.parse_args(bad)


def test_vae_part_checkpoints_and_resumes(tmp_path: Path) -> None:
    options = train.parse_args(["--part", "vae", "--steps", "1", "--threads", "1", "--out", str(tmp_path)])
    first = train.train_vae(options)
    assert first.steps == 1 and (tmp_path / "train-state" / "vae" / "config.json").exists()
    longer = train.parse_args(["--part", "vae", "--steps", "2", "--threads", "1", "--out", str(tmp_path)])
    second = train.train_vae(longer)
    assert second.steps == 2, "the second run continues from the first one's checkpoint"


def test_a_checkpoint_over_retrained_parts_is_not_resumed(tmp_path: Path) -> None:
    options = train.parse_args(["--out", str(tmp_path)])
    vae_dir = options.work / "vae"
    vae_dir.mkdir(parents=True)
    (vae_dir / "diffusion_pytorch_model.safetensors").write_bytes(b"first")
    before = train.upstream_fingerprint(options, "unet")
    assert train.upstream_fingerprint(options, "unet") == before
    (vae_dir / "diffusion_pytorch_model.safetensors").write_bytes(b"second")
    assert train.upstream_fingerprint(options, "unet") != before
    assert train.upstream_fingerprint(options, "vae") == train.upstream_fingerprint(options, "vae")


def test_all_parts_export_pipelines_that_share_the_frozen_text_encoder(tmp_path: Path) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

    options = train.parse_args(
        ["--part", "all", "--steps", "1", "--threads", "1", "--pool", "64", "--out", str(tmp_path)]
    )
    for part in train.PARTS:
        assert train.TRAINERS[part](options).steps == 1
    encoder = "text_encoder/model.safetensors"
    frozen = (options.work / encoder).read_bytes()
    # The text part trains the encoder; the denoisers after it only read it, so both pipelines ship it as is.
    assert (tmp_path / "generate" / encoder).read_bytes() == frozen
    assert (tmp_path / "edit" / encoder).read_bytes() == frozen
    generate: Any = StableDiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]  # diffusers leaves it untyped
        tmp_path / "generate", torch_dtype=torch.float32
    )
    edit: Any = StableDiffusionInstructPix2PixPipeline.from_pretrained(  # type: ignore[no-untyped-call]  # as above
        tmp_path / "edit", torch_dtype=torch.float32
    )
    assert generate.unet.config.in_channels == 4 and edit.unet.config.in_channels == 8
    image = generate("a red circle on a blue background", num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 64, 64, 3)


def test_random_text_encoder_stays_as_it_started(tmp_path: Path) -> None:
    """`--random-text-encoder`: the text part trains only its denoiser, and is a whole model already."""
    common = ["--threads", "1", "--pool", "64", "--out", str(tmp_path)]
    assert train.train_vae(train.parse_args(["--part", "vae", "--steps", "1", *common])).steps == 1
    encoders, unets = [], []
    for steps in ("1", "2"):
        flags = ["--part", "text", "--steps", steps, "--random-text-encoder", "--shape-weight", "4"]
        options = train.parse_args([*flags, *common])
        assert options.random_text_encoder and train.train_text(options).steps == int(steps)
        encoders.append((options.work / "text_encoder" / "model.safetensors").read_bytes())
        unets.append((options.work / "text_unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    assert encoders[0] == encoders[1] and unets[0] != unets[1]
    assert (tmp_path / "generate" / "model_index.json").exists()
    assert train.parse_args([]).random_text_encoder
    assert not train.parse_args(["--no-random-text-encoder"]).random_text_encoder


def test_edit_part_from_scratch_reads_no_text_denoiser(tmp_path: Path) -> None:
    """`--edit-init scratch` (the default): only the autoencoder and the frozen text encoder are read, so
    retraining the text-to-image denoiser leaves an edit checkpoint resumable, and it need not exist."""
    common = ["--threads", "1", "--pool", "64", "--steps", "1", "--out", str(tmp_path)]
    train.train_vae(train.parse_args(["--part", "vae", *common]))
    train.train_text(train.parse_args(["--part", "text", *common]))
    scratch = train.parse_args(["--part", "edit", *common])
    from_text = train.parse_args(["--part", "edit", "--edit-init", "text", *common])
    assert scratch.edit_init == "scratch" and from_text.edit_init == "text"
    before = train.upstream_fingerprint(scratch, "edit"), train.upstream_fingerprint(from_text, "edit")
    text_unet = scratch.work / "text_unet" / "diffusion_pytorch_model.safetensors"
    text_unet.write_bytes(b"retrained")
    assert train.upstream_fingerprint(scratch, "edit") == before[0]
    assert train.upstream_fingerprint(from_text, "edit") != before[1]
    shutil.rmtree(scratch.work / "text_unet")
    assert train.train_edit(scratch).steps == 1
    edit_unet: Any = train.load_trained(scratch, "edit_unet")
    conv_in = edit_unet.conv_in.weight.detach()
    assert conv_in.shape[1] == 8 and float(conv_in[:, 4:].abs().mean()) > 0.01, "picture channels start live"
    with pytest.raises(FileNotFoundError, match="no trained text_unet"):
        train.train_edit(from_text)


def test_kept_shape_cells_mark_the_shape_a_background_edit_keeps() -> None:
    rng = np.random.default_rng(5)
    background = train.edit_batch(rng, 4, {data.EditKind.BACKGROUND: 1.0})
    recolour = train.edit_batch(rng, 4, {data.EditKind.RECOLOUR: 1.0})
    kept = train.kept_shape_cells(background.before, background.after)
    assert kept.shape == (4, 1, 16, 16) and float(kept.min()) >= 0.0 and float(kept.max()) <= 1.0
    # Every background edit keeps its shapes, so each has cells wholly inside a shape, and only a few.
    assert bool((kept.amax(dim=(1, 2, 3)) == 1.0).all())
    assert float((kept > 0).float().mean()) < 0.5
    # A recolour of a single shape changes all of it: nothing on a shape is kept.
    singles = [i for i, t in enumerate(recolour.triples) if len(t.before.shapes) == 1]
    assert singles and float(train.kept_shape_cells(recolour.before, recolour.after)[singles].max()) == 0.0
    assert train.cell_weights(0.0, kept) is None and train.cell_weights(4.0, None) is None
    weights = train.cell_weights(4.0, kept)
    assert weights is not None and float(weights.max()) == 5.0 and float(weights.min()) == 1.0


def test_changed_shape_cells_mark_the_shape_a_recolour_repaints_and_nothing_of_a_background_edit() -> None:
    rng = np.random.default_rng(6)
    background = train.edit_batch(rng, 4, {data.EditKind.BACKGROUND: 1.0})
    recolour = train.edit_batch(rng, 4, {data.EditKind.RECOLOUR: 1.0})
    move = train.edit_batch(rng, 4, {data.EditKind.MOVE: 1.0})
    # A background edit changes no shape: only the rims, where a shape blends into the new background.
    assert float(train.changed_shape_cells(background.before, background.after).max()) < 0.5
    changed = train.changed_shape_cells(recolour.before, recolour.after)
    kept = train.kept_shape_cells(recolour.before, recolour.after)
    assert changed.shape == (4, 1, 16, 16) and bool((changed.amax(dim=(1, 2, 3)) == 1.0).all())
    # No pixel is both kept and changed; a repainted shape is a small part of the picture.
    assert float((changed + kept).max()) <= 1.0 + 1e-6
    assert float((changed > 0).float().mean()) < 0.5
    # A move changes the shape where it was and where it is now: more cells than the shape alone covers.
    moved = train.changed_shape_cells(move.before, move.after)
    alone = train.kept_shape_cells(move.before, move.before)  # every shape cell of the picture before
    assert bool(((moved > 0).sum(dim=(1, 2, 3)) > (alone > 0).sum(dim=(1, 2, 3))).all())


def test_edit_mix_sets_the_background_share_and_keeps_the_others_in_proportion() -> None:
    assert train.edit_mix() == train.EDIT_MIX
    mix = train.edit_mix(0.6)
    assert mix[data.EditKind.BACKGROUND] == 0.6 and sum(mix.values()) == pytest.approx(1.0)
    others = [k for k in train.EDIT_MIX if k is not data.EditKind.BACKGROUND]
    ratio = mix[data.EditKind.RECOLOUR] / mix[data.EditKind.MOVE]
    assert ratio == pytest.approx(train.EDIT_MIX[data.EditKind.RECOLOUR] / train.EDIT_MIX[data.EditKind.MOVE])
    assert all(mix[k] > 0 for k in others)
    with pytest.raises(SystemExit):
        train.parse_args(["--background-edits", "1.0"])
    with pytest.raises(SystemExit):
        train.parse_args(["--keep-weight", "-1"])
    with pytest.raises(SystemExit):
        train.parse_args(["--change-weight", "-1"])


def _fine_tune(tmp_path: Path, part: str, extra: list[str]) -> tuple[Path, Path, train.TrainOptions]:
    """A one-step run of `part` fine-tuning the pipeline a one-step run from scratch exported (`--edit-from`,
    `--unet-from`): the denoiser moves; the autoencoder and text encoder are carried byte for byte; the
    checkpoint is tied to the folder it fine-tunes; a folder with no pipeline is refused. Returns the two
    pipeline folders and the options."""
    folder, flag, trainer = {
        "edit": ("edit", "--edit-from", train.train_edit),
        "unet": ("generate", "--unet-from", train.train_unet),
    }[part]
    common = ["--threads", "1", "--pool", "64", "--steps", "1"]
    first = tmp_path / "first"
    for earlier in (train.train_vae, train.train_text, *([train.train_edit] if part == "edit" else [])):
        earlier(
            train.parse_args(
                ["--part", earlier.__name__.removeprefix("train_"), *common, "--out", str(first)]
            )
        )
    tuned = tmp_path / "tuned"
    options = train.parse_args(
        ["--part", part, *common, flag, str(first / folder), *extra, "--out", str(tuned)]
    )
    assert trainer(options).steps == 1
    for frozen in ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        assert (tuned / folder / frozen).read_bytes() == (first / folder / frozen).read_bytes()
    assert (tuned / folder / "tokenizer").exists()
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert (tuned / folder / unet).read_bytes() != (first / folder / unet).read_bytes()
    # Against the same part over this run's own (absent) earlier parts.
    assert train.upstream_fingerprint(options, part) != train.upstream_fingerprint(
        train.parse_args(["--part", part, "--out", str(tuned)]), part
    )
    with pytest.raises(FileNotFoundError, match=f"no {folder} pipeline"):
        bad = ["--part", part, flag, str(tmp_path), "--out", str(tmp_path / "none")]
        trainer(train.parse_args([*bad, *common]))
    return first / folder, tuned / folder, options


def test_edit_part_fine_tunes_an_exported_edit_pipeline(tmp_path: Path) -> None:
    """`--edit-from DIR`: the denoiser continues from DIR's, over DIR's own frozen autoencoder and text
    encoder, which the exported pipeline carries unchanged."""
    flags = ["--keep-weight", "4", "--change-weight", "2", "--untold-keeps"]
    shipped, _, options = _fine_tune(
        tmp_path, "edit", [*flags, "--edit-mix", "recolour=0.42,background=0.48"]
    )
    assert options.edit_from == shipped and options.keep_weight == 4.0
    assert options.change_weight == 2.0 and options.untold_keeps
    assert options.edit_mix == "recolour=0.42,background=0.48"


def test_edit_mix_option_names_some_shares_and_the_rest_keep_their_proportions() -> None:
    mix = train.parse_edit_mix("recolour=0.42, Background=0.48")
    assert mix[data.EditKind.RECOLOUR] == 0.42 and mix[data.EditKind.BACKGROUND] == 0.48
    assert sum(mix.values()) == pytest.approx(1.0)
    rest = [data.EditKind.MOVE, data.EditKind.RESIZE, data.EditKind.ADD, data.EditKind.REMOVE]
    assert [mix[k] for k in rest] == pytest.approx([0.025] * 4)
    whole = "recolour=0.5,background=0.5,move=0,resize=0,add=0,remove=0"
    assert train.parse_edit_mix(whole)[data.EditKind.MOVE] == 0.0
    for bad in (
        "recolour=0.6,background=0.5",
        "recolour=0.5,background=0.5",
        "paint=0.4",
        "recolour",
        "recolour=x",
        "recolour=0.3,recolour=0.4",
        "recolour=-0.1",
        "recolour=1,background=0,move=0",
    ):
        with pytest.raises(ValueError):
            train.parse_edit_mix(bad)
    with pytest.raises(SystemExit):
        train.parse_args(["--edit-mix", "paint=0.4"])
    options = train.parse_args(["--edit-mix", "recolour=0.42,background=0.48"])
    assert options.edit_mix == "recolour=0.42,background=0.48"
    # A batch drawn with the mix holds the kinds it asks for, about as often.
    batch = train.edit_batch(np.random.default_rng(3), 200, mix)
    recolours = sum(t.kind is data.EditKind.RECOLOUR for t in batch.triples)
    assert 60 <= recolours <= 110


def test_unet_part_fine_tunes_an_exported_generate_pipeline(tmp_path: Path) -> None:
    """`--unet-from DIR`: the text-to-image denoiser continues from DIR's, over DIR's own frozen autoencoder,
    tokenizer and text encoder, which the exported pipeline carries byte for byte."""
    shipped, _, options = _fine_tune(tmp_path, "unet", ["--shape-weight", "3"])
    assert options.unet_from == shipped and options.shape_weight == 3.0


def test_untold_targets_replace_only_the_rows_without_an_instruction() -> None:
    latents, picture = torch.zeros(3, 4, 2, 2), torch.ones(3, 4, 2, 2)
    out = train.untold_targets(latents, picture, torch.tensor([False, True, False]))
    assert out[1].eq(1).all() and out[[0, 2]].eq(0).all()
    assert not train.parse_args([]).untold_keeps and train.parse_args(["--untold-keeps"]).untold_keeps
