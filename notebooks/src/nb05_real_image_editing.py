"""Notebook 05_real_image_editing."""
from common import SETUP, code, md  # noqa: F401

CELLS = [
    md(r'''
# 05 · Real-image editing

A photo is first **inverted** to the noise that regenerates it (DDIM inversion, pix2pix-zero style:
no CFG, the noise prediction regularised towards white noise by an auto-correlation and a KL
penalty), then sampled again with its caption as prompt and negative prompt, composed with
editorial prompts:

$$z_{t+1} = \sqrt{\bar a_{t+1}}\,\hat x_0(z_t) + \sqrt{1-\bar a_{t+1}}\;\epsilon_\theta(z_t, t, c),\qquad
O = \frac{O_\text{caption} + \alpha_+ O_\text{dog} - \alpha_- O_\text{cat}}{1 + \alpha_+ - \alpha_-}.$$

Published example: cat $\to$ dog with "dog" (+, 0.75), "cat" (−, 0.65), start 0.5.
Offline, the "photo" is a shapes-world scene (or matplotlib's sample photo on real weights).
'''),
    code(SETUP),
    code('''
from ebca_viz.tasks import real_edit, sample_image

if REAL:
    photo, where = sample_image()
    SOURCE = None   # the BLIP captioner writes it (needs its weights), or type one
    EDITS = [ev.Edit(prompt="dog", alpha=0.75, direction=+1, start=0.5, gamma_attn=6e-4, gamma_norm=6e-4),
             ev.Edit(prompt="cat", alpha=0.65, direction=-1, start=0.5, gamma_attn=5e-4, gamma_norm=5e-4)]
else:
    from PIL import Image
    from ebca_viz.shapes import world
    scene = world.make_scene(__import__("numpy").random.default_rng(3), pairs=[("red", "circle")])
    photo, where = Image.fromarray(scene.image), "shapes-world scene"
    SOURCE = scene.caption
    EDITS = [ev.Edit(prompt="a blue circle", alpha=0.75, direction=+1, start=0.5),
             ev.Edit(prompt="a red circle", alpha=0.65, direction=-1, start=0.5)]
print(where, "| caption:", SOURCE)
res = real_edit(pipe, photo, EDITS, source_prompt=SOURCE, num_inference_steps=STEPS,
                num_reg_steps=viz.pick(5, 1), num_autocorr_rolls=viz.pick(5, 1))
print("source prompt:", res.info["source_prompt"], "| inversion", res.info["seconds_inversion"], "s")
viz.compare_images({"photo": res.extras["source"], "edited": res.image}, diff=True)
'''),
    md(r'''
## The inverted noise

If the inversion works, $z_T$ looks like white noise (no image structure left): its channels and
their histogram against $\mathcal N(0,1)$.
'''),
    code('''
import numpy as np
z = res.extras["inverted_latents"][0].float().cpu()
fig = viz.new_figure(figsize=(10, 2.4))
axes = fig.subplots(1, z.shape[0] + 1)
for c in range(z.shape[0]):
    axes[c].imshow(z[c], cmap="RdBu_r"); axes[c].set_title(f"z_T channel {c}", fontsize=8); axes[c].axis("off")
x = np.linspace(-4, 4, 100)
axes[-1].hist(z.flatten().numpy(), bins=40, density=True, alpha=0.6)
axes[-1].plot(x, np.exp(-x**2 / 2) / np.sqrt(2 * np.pi), "k-", lw=1)
axes[-1].set_title(f"mean {float(z.mean()):.2f}, std {float(z.std()):.2f}", fontsize=8)
fig.tight_layout(); fig
'''),
    md(r'''## Editing from the same inverted noise, with and without the negative edit'''),
    code('''
only_pos = real_edit(pipe, photo, EDITS[:1], source_prompt=res.info["source_prompt"], num_inference_steps=STEPS,
                     num_reg_steps=viz.pick(5, 1), num_autocorr_rolls=viz.pick(5, 1))
viz.compare_images({"photo": res.extras["source"], "+ only": only_pos.image, "+ and -": res.image})
'''),
]
