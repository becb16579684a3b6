"""Train the shapes-world Stable Diffusion pipeline from scratch on CPU, against a wall-clock budget.

    python -m ebca_viz.shapes.train --out outputs/shapes_run --minutes 50 --seed 0

Phase 1 trains the ``AutoencoderKL`` (f=4, reconstruction MSE + small KL) for ``--vae-minutes``;
its latent scale is then measured (``scaling_factor = 1 / std`` of posterior samples), as SD's
0.18215 was. Phase 2 freezes the VAE and trains the ``UNet2DConditionModel`` and the small
``CLIPTextModel`` jointly with the SD objective: ``x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps``
with SD 1.x betas, ``t ~ U{0..999}``, loss ``|eps - eps_theta(x_t, t, c)|^2`` (epsilon
prediction); the caption is replaced by ``""`` with probability ``--cfg-drop`` (0.1) so that
classifier-free guidance works. Data are generated on the fly from :mod:`.world` (never stored).

The neglect world (``ebca_viz/weights/neglect_world/TRAINING.md``) is made by the same script:
``--init-vae`` / ``--init-from`` start from a pipeline folder (its VAE is reused frozen and the VAE
phase skipped; its UNet and text encoder are fine-tuned), ``--holdout triangle-pairs --holdout-mode
drop`` alters the training scenes of the held-out pairs (:mod:`.neglect`).

Checkpoints (every ``--ckpt-minutes`` / ``--ckpt-steps``) write the EMA weights to ``ckpt/`` and the
full state to ``state/`` (weights, EMA, AdamW moments, step, elapsed time, both RNG states; safetensors
+ JSON); ``--resume`` continues from it. With ``--schedule steps`` the resumed run is bit-identical to
an uninterrupted one (tested); with the default wall-clock schedule it continues the cosine from the
saved elapsed time.

Outputs in ``--out``: ``loss.csv`` (step, minutes, loss, lr), ``ckpt/`` (EMA weights, refreshed every
``--ckpt-minutes``), ``pipeline/`` (final EMA weights, fp16 safetensors, loadable with
``load_shapes_pipeline(folder=...)``), ``pipeline_raw/`` (final non-EMA weights) and ``train_info.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ..errors import InvalidSetting, MissingFile, RefusedFile


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--minutes", type=float, default=50.0, help="wall budget of the UNet phase")
    p.add_argument("--vae-minutes", type=float, default=5.0, help="wall budget of the VAE phase")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=200, help="linear LR warm-up steps")
    p.add_argument("--min-lr-frac", type=float, default=0.1, help="cosine (over wall time) decays to this fraction")
    p.add_argument("--cfg-drop", type=float, default=0.1, help="probability of the empty caption")
    p.add_argument("--p-two", type=float, default=0.5, help="probability of a two-object scene")
    p.add_argument("--holdout", default="none",
                   help="shape pairs never drawn together in a two-object training scene "
                        "(ebca_viz.shapes.neglect.HOLDOUTS: none, triangle-pairs)")
    p.add_argument("--holdout-mode", choices=("redraw", "drop"), default="redraw",
                   help="a held-out two-object draw: 'redraw' its shapes (the pair never co-occurs in caption or "
                        "image), or 'drop': keep the caption naming both, draw only one of them (caption noise)")
    p.add_argument("--init-vae", default="",
                   help="pipeline folder whose trained vae/ is reused (frozen, its scaling_factor kept); "
                        "skips the VAE phase")
    p.add_argument("--init-from", default="",
                   help="pipeline folder whose unet/ and text_encoder/ start the UNet phase (fine-tuning); "
                        "default: random initialisation")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of UNet + text encoder (0: off)")
    p.add_argument("--unet-channels", default="64,128")
    p.add_argument("--layers-per-block", type=int, default=1)
    p.add_argument("--vae-channels", default="32,64,64")
    p.add_argument("--text-hidden", type=int, default=64)
    p.add_argument("--text-layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ckpt-minutes", type=float, default=10.0)
    p.add_argument("--ckpt-steps", type=int, default=0, help="also checkpoint every N steps (0: by time only)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --out/state (written with every checkpoint): weights, EMA, AdamW moments, "
                        "step, elapsed time and RNG states are restored")
    p.add_argument("--schedule", choices=("time", "steps"), default="time",
                   help="cosine LR over the wall budget (--minutes) or over --max-steps (bit-reproducible on resume)")
    p.add_argument("--max-steps", type=int, default=0, help="stop the UNet phase after this many steps (0: time only)")
    p.add_argument("--stop-at", type=int, default=0,
                   help="interrupt the UNet phase after this step (state saved; continue with --resume)")
    p.add_argument("--vae-max-steps", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _ints(s: str) -> tuple:
    return tuple(int(x) for x in s.split(","))


class Batches:
    """On-the-fly training data: ``next_images(B) -> (B, 3, S, S)`` in [-1, 1] and captions."""

    def __init__(self, seed: int, size: int, p_two: float, holdout: str = "none", mode: str = "redraw"):
        from . import neglect, world

        self.world, self.neglect = world, neglect
        neglect.check_holdout(holdout)
        if mode not in ("redraw", "drop"):
            raise InvalidSetting(f"holdout mode must be 'redraw' or 'drop', got {mode!r}")
        self.rng = np.random.default_rng(seed)
        self.size, self.p_two, self.holdout, self.mode = size, p_two, holdout, mode

    def pairs(self) -> list:
        if self.holdout == "none":
            return self.world.random_pairs(self.rng, self.p_two)
        if self.mode == "drop":
            return self.world.random_pairs(self.rng, self.p_two)
        return self.neglect.training_pairs(self.rng, self.p_two, self.holdout)

    def scene(self):
        pairs = self.pairs()
        if self.mode == "drop" and self.neglect.is_held_out(pairs, self.holdout):
            keep = [pairs[int(self.rng.integers(2))]]  # caption names both, the image shows one
            sc = self.world.make_scene(self.rng, pairs=keep, size=self.size)
            return self.world.Scene(sc.image, self.world.caption_for(pairs), sc.objects)
        return self.world.make_scene(self.rng, pairs=pairs, size=self.size)

    def __call__(self, n: int):
        scenes = [self.scene() for _ in range(n)]
        return self.world.to_tensor([s.image for s in scenes]), [s.caption for s in scenes]


class TokenCache:
    """Caption -> ``(77,)`` token ids (the caption set is small and finite)."""

    def __init__(self, tokenizer):
        self.tok, self.cache = tokenizer, {}

    def __call__(self, captions) -> torch.Tensor:
        for c in captions:
            if c not in self.cache:
                self.cache[c] = self.tok(c, padding="max_length", max_length=self.tok.model_max_length,
                                         truncation=True, return_tensors="pt").input_ids[0]
        return torch.stack([self.cache[c] for c in captions])


def _progress(total_s: float, desc: str, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(total=round(total_s), desc=desc, unit="s", disable=disable, mininterval=10, file=sys.stderr,
                dynamic_ncols=False, ncols=100)


def train_vae(vae, data: Batches, args, log) -> dict:
    """Phase 1: reconstruction + KL. Returns the final loss numbers and the measured scaling factor."""
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    budget = args.vae_minutes * 60
    t0, step, ema_loss = time.time(), 0, None
    bar = _progress(budget, "vae", args.no_progress)
    vae.train()
    while True:
        el = time.time() - t0
        if el >= budget or (args.vae_max_steps and step >= args.vae_max_steps):
            break
        x, _ = data(args.vae_batch)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / x[0].numel()
        loss = mse + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        ema_loss = mse.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * mse.item()
        if step % args.log_every == 0:
            log(f"vae step {step} min {el / 60:.2f} mse {ema_loss:.5f} kl {kl.item():.3f}")
        bar.n = min(round(el), bar.total)
        bar.set_postfix(step=step, mse=f"{ema_loss:.4f}", refresh=False)
        bar.update(0)
    bar.close()
    vae.eval()
    with torch.no_grad():
        x, _ = data(256)
        z = vae.encode(x).latent_dist.sample()
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        sf = float(1.0 / z.flatten().std())
        final_mse = F.mse_loss(rec, x).item()
    vae.register_to_config(scaling_factor=sf)
    log(f"vae done: {step} steps, held-out mse {final_mse:.5f}, scaling_factor {sf:.4f}")
    return dict(steps=step, minutes=(time.time() - t0) / 60, mse=final_mse, scaling_factor=sf)


def init_vae(vae, folder: str, log) -> dict:
    """Load the ``vae/`` of a pipeline folder (same architecture) instead of training one."""
    from ..models.shapes_world import WEIGHT_FILES, _load_state

    sub = Path(folder) / "vae"
    if not (sub / WEIGHT_FILES["vae"]).is_file():
        raise MissingFile.of("--init-vae", folder, "give a trained pipeline folder (one with vae/"
                              f"{WEIGHT_FILES['vae']}), or omit --init-vae to train a VAE",
                              why=f"no {sub / WEIGHT_FILES['vae']}")
    cfg = json.loads((sub / "config.json").read_text())
    vae.load_state_dict(_load_state(sub, WEIGHT_FILES["vae"], torch.float32), strict=True)
    vae.register_to_config(scaling_factor=cfg["scaling_factor"])
    log(f"vae loaded from {sub} (scaling_factor {cfg['scaling_factor']:.4f}); VAE phase skipped")
    return dict(steps=0, minutes=0.0, init_from=str(sub), scaling_factor=cfg["scaling_factor"])


def save_state(folder: Path, vae, unet, te, ema_unet, ema_te, opt, data, gen, step: int, elapsed_s: float) -> None:
    """Everything a resumed run needs, no pickles: ``tensors.safetensors`` (fp32 weights, EMA weights,
    AdamW moments, the torch generator state) + ``state.json`` (step, elapsed seconds, numpy RNG state).
    Written to ``<folder>.tmp`` and renamed (atomic)."""
    import shutil

    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t = {}
    for tag, m in (("vae", vae), ("unet", unet), ("te", te), ("ema_unet", ema_unet), ("ema_te", ema_te)):
        t.update({f"{tag}.{k}": v.detach().clone().contiguous() for k, v in m.state_dict().items()})
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for k, v in opt.state.get(p, {}).items():
            t[f"opt.{i}.{k}"] = v.detach().clone().reshape(v.shape).contiguous()
    t["gen_state"] = gen.get_state()
    save_file(t, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(dict(step=step, elapsed_s=elapsed_s, vae_scaling_factor=vae.config.scaling_factor,
                                                    numpy_rng=data.rng.bit_generator.state)) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def resume_vae(vae, folder: Path, log) -> dict:
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        raise MissingFile.of("--resume", str(folder), "drop --resume to start a new run, or give the --out of a run "
                             "that reached a checkpoint", why="no saved state here (written at each checkpoint)")
    t = load_file(str(folder / "tensors.safetensors"))
    vae.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("vae.")}, strict=True)
    sf = json.loads((folder / "state.json").read_text())["vae_scaling_factor"]
    vae.register_to_config(scaling_factor=sf)
    log(f"vae restored from {folder} (scaling_factor {sf:.4f})")
    return dict(steps=0, minutes=0.0, resumed_from=str(folder), scaling_factor=sf)


def load_state(folder: Path, unet, te, ema_unet, ema_te, opt, data, gen) -> dict:
    """Inverse of :func:`save_state` (models and optimizer are filled in place)."""
    from safetensors.torch import load_file

    if not (folder / "state.json").is_file():
        raise MissingFile.of("--resume", str(folder), "drop --resume to start a new run, or give the --out of a run "
                             "that reached a checkpoint", why="no saved state here (written at each checkpoint)")
    t = load_file(str(folder / "tensors.safetensors"))
    for tag, m in (("unet", unet), ("te", te), ("ema_unet", ema_unet), ("ema_te", ema_te)):
        sd = {k[len(tag) + 1:]: v for k, v in t.items() if k.startswith(tag + ".")}
        m.load_state_dict(sd, strict=True)
    for i, p in enumerate(opt.param_groups[0]["params"]):
        ks = {k.split(".", 2)[2]: v for k, v in t.items() if k.startswith(f"opt.{i}.")}
        if ks:
            opt.state[p] = ks
    gen.set_state(t["gen_state"])
    st = json.loads((folder / "state.json").read_text())
    data.rng.bit_generator.state = st["numpy_rng"]
    return st


def init_denoiser(unet, te, folder: str, log) -> None:
    """Start the UNet phase from the ``unet/`` and ``text_encoder/`` of a pipeline folder (same
    architecture; fp16 files are cast to float32)."""
    from ..models.shapes_world import WEIGHT_FILES, _load_state

    for comp, m in (("unet", unet), ("text_encoder", te)):
        sub = Path(folder) / comp
        if not (sub / WEIGHT_FILES[comp]).is_file():
            raise MissingFile.of("--init-from", folder, f"give a trained pipeline folder (one with {comp}/"
                                  f"{WEIGHT_FILES[comp]}), or omit --init-from to start from random weights",
                                  why=f"no {sub / WEIGHT_FILES[comp]}")
        missing, unexpected = m.load_state_dict(_load_state(sub, WEIGHT_FILES[comp], torch.float32), strict=False)
        if unexpected or [k for k in missing if not k.endswith("position_ids")]:
            raise RefusedFile.of("--init-from", str(sub), "pass the same --unet-channels / --layers-per-block / "
                                  "--text-hidden / --text-layers / --heads as the run that wrote it",
                                  why=f"weights do not match (missing {missing}, unexpected {unexpected})")
    log(f"unet and text encoder initialised from {folder}")


def _ema_update(ema_model, model, decay):
    with torch.no_grad():
        for pe, p in zip(ema_model.parameters(), model.parameters()):
            pe.lerp_(p, 1.0 - decay)


def noisy_batch(data, batch: int, cfg_drop: float, gen, vae, sf: float, sched) -> tuple:
    """One training batch of both trainers: ``batch`` scenes and captions from ``data``, each caption dropped to
    ``""`` with probability ``cfg_drop`` (classifier-free guidance), the scenes' VAE latents times ``sf``, noised
    at ``t ~ U{0..T-1}``: ``(captions, z_t, noise, t)``. The generator ``gen`` is drawn in this fixed order, so a
    resumed run draws the same numbers."""
    x, caps = data(batch)
    drop = torch.rand(len(caps), generator=gen) < cfg_drop
    caps = ["" if d else c for c, d in zip(caps, drop.tolist())]
    with torch.no_grad():
        z = vae.encode(x).latent_dist.sample(generator=gen) * sf
    noise = torch.randn(z.shape, generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (z.shape[0],), generator=gen)
    return caps, sched.add_noise(z, noise, t), noise, t


def optimizer_step(loss, opt, params, step: int, ema: float, ema_pairs) -> int:
    """One update of both trainers (UNet and DiT worlds): backward, clip the gradient norm to 1, step, then the
    EMA copies ``(ema_model, model)`` with decay ``min(ema, (1 + step) / (10 + step))``; returns ``step + 1``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    step += 1
    if ema > 0:
        d = min(ema, (1 + step) / (10 + step))
        for ema_model, model in ema_pairs:
            _ema_update(ema_model, model, d)
    return step


def train_unet(vae, unet, te, tok, data: Batches, args, log, out: Path) -> dict:
    """Phase 2: epsilon prediction with SD's noise schedule and caption dropout."""
    from diffusers import DDPMScheduler

    from ..models.tiny import SD_SCHEDULER
    from ..models.shapes_world import export_pipeline

    sched = DDPMScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "set_alpha_to_one"})
    vae.requires_grad_(False).eval()
    tokens = TokenCache(tok)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema_unet = copy.deepcopy(unet).requires_grad_(False) if args.ema > 0 else unet
    ema_te = copy.deepcopy(te).requires_grad_(False) if args.ema > 0 else te
    sf = vae.config.scaling_factor
    gen = torch.Generator().manual_seed(args.seed + 1)
    budget = args.minutes * 60
    if args.schedule == "steps" and not args.max_steps:
        raise InvalidSetting("--schedule steps needs --max-steps N (the cosine runs over N steps)")
    t0 = time.time()
    step, run_loss, window = 0, None, []
    if args.resume:
        st = load_state(out / "state", unet, te, ema_unet, ema_te, opt, data, gen)
        step, t0 = st["step"], t0 - st["elapsed_s"]
        log(f"resumed from {out / 'state'} at step {step} ({st['elapsed_s'] / 60:.2f} min)")
    last_ckpt = time.time()
    csv = open(out / "loss.csv", "a" if args.resume else "w")
    if not args.resume:
        csv.write("step,minutes,loss,lr\n")
    bar = _progress(budget, "unet", args.no_progress)
    unet.train(), te.train()
    while True:
        el = time.time() - t0
        if el >= budget or (args.max_steps and step >= args.max_steps):
            break
        if args.stop_at and step >= args.stop_at:
            save_state(out / "state", vae, unet, te, ema_unet, ema_te, opt, data, gen, step, time.time() - t0)
            log(f"stopped at step {step} (--stop-at); state -> {out / 'state'}")
            break
        frac = min(step / args.max_steps if args.schedule == "steps" else el / budget, 1.0)
        lr = args.lr * min(1.0, (step + 1) / max(args.warmup, 1)) * (
            args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        caps, zt, noise, t = noisy_batch(data, args.batch, args.cfg_drop, gen, vae, sf, sched)
        ctx = te(tokens(caps))[0]
        pred = unet(zt, t, encoder_hidden_states=ctx).sample
        loss = F.mse_loss(pred, noise)
        step = optimizer_step(loss, opt, params, step, args.ema, ((ema_unet, unet), (ema_te, te)))
        window.append(loss.item())
        if step % args.log_every == 0:
            run_loss = float(np.mean(window))
            window = []
            csv.write(f"{step},{el / 60:.3f},{run_loss:.5f},{lr:.6g}\n")
            csv.flush()
            log(f"unet step {step} min {el / 60:.2f} loss {run_loss:.4f} lr {lr:.2e} "
                f"({step / max(el, 1e-9):.2f} it/s)")
        bar.n = min(round(el), bar.total)
        bar.set_postfix(step=step, loss=f"{run_loss or loss.item():.4f}", refresh=False)
        bar.update(0)
        if time.time() - last_ckpt > args.ckpt_minutes * 60 or (args.ckpt_steps and step % args.ckpt_steps == 0):
            export_pipeline(vae, ema_unet, ema_te, out / "ckpt", dtype=torch.float32,
                            extra=dict(step=step, minutes=el / 60, loss=run_loss))
            last_ckpt = time.time()
            save_state(out / "state", vae, unet, te, ema_unet, ema_te, opt, data, gen, step, time.time() - t0)
            log(f"checkpoint at step {step} -> {out / 'ckpt'} (EMA weights), {out / 'state'} (full state)")
    bar.close()
    csv.close()
    if window:
        run_loss = float(np.mean(window))
    return dict(steps=step, minutes=(time.time() - t0) / 60, final_loss=run_loss, ema_unet=ema_unet, ema_te=ema_te)



def run_log(out: Path):
    """``(log, file)``: ``log(msg)`` prints ``[HH:MM:SS] msg`` and appends it to ``out/train.log`` (created with
    ``out``); close ``file`` at the end of the run. Both trainers (UNet and DiT worlds) log this way."""
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "train.log", "a")

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    return log, logf


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    log, logf = run_log(out)

    from ..models.shapes_world import build_models, export_pipeline

    t_start = time.time()
    torch.manual_seed(args.seed)
    vae, unet, te, tok = build_models(
        image_size=args.image_size, vae_channels=_ints(args.vae_channels), unet_channels=_ints(args.unet_channels),
        layers_per_block=args.layers_per_block, text_hidden=args.text_hidden, text_layers=args.text_layers,
        heads=args.heads, seed=args.seed)
    n = {k: sum(p.numel() for p in m.parameters()) for k, m in (("vae", vae), ("unet", unet), ("text_encoder", te))}
    log(f"parameters: {n}; threads {torch.get_num_threads()}; args {vars(args)}")
    data = Batches(args.seed, args.image_size, args.p_two, args.holdout, args.holdout_mode)
    if args.init_from:
        init_denoiser(unet, te, args.init_from, log)
    if args.init_vae:
        vae_info = init_vae(vae, args.init_vae, log)
    elif args.resume:  # the VAE phase is over: its weights are in the saved state
        vae_info = resume_vae(vae, out / "state", log)
    else:
        vae_info = train_vae(vae, data, args, log)
    res = train_unet(vae, unet, te, tok, data, args, log, out)
    import diffusers
    import transformers

    info = dict(
        command="python -m ebca_viz.shapes.train " + " ".join(sys.argv[1:] if argv is None else argv),
        args=vars(args), parameters=n, vae=vae_info,
        unet=dict(steps=res["steps"], minutes=res["minutes"], final_loss=res["final_loss"]),
        wall_minutes_total=(time.time() - t_start) / 60,
        versions=dict(python=platform.python_version(), torch=torch.__version__, diffusers=diffusers.__version__,
                      transformers=transformers.__version__, numpy=np.__version__),
        machine=dict(platform=platform.platform(), cpu_threads=torch.get_num_threads(), os_cpus=os.cpu_count()),
    )
    export_pipeline(vae, res["ema_unet"], res["ema_te"], out / "pipeline", extra=info)
    export_pipeline(vae, unet, te, out / "pipeline_raw", extra=info)
    (out / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")
    log(f"done: {res['steps']} UNet steps in {res['minutes']:.1f} min, final loss {res['final_loss']}; "
        f"pipeline -> {out / 'pipeline'}")
    return info


if __name__ == "__main__":
    main()
